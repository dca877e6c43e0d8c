// The property tables that serve the host's objects and the contexts
// (svad/dbus/property_table.h): each follows its interface's XML in dbus/, property by property,
// and a table that strays from its XML is refused when it is made.
#include "svad/dbus/Device_properties.h"
#include "svad/dbus/objects.h"

#include <cstring>
#include <fstream>
#include <gtest/gtest.h>
#include <regex>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace svad::dbus {
namespace {

using NameAndType = std::pair<std::string, std::string>;

// The properties of dbus/org.svad.Svad1.NAME.xml, read here with a pattern,
// not with the build's generator.
std::vector<NameAndType> xmlProperties(const std::string& name) {
    std::ifstream in(std::string(SVAD_SOURCE_DIR) + "/dbus/org.svad.Svad1." + name + ".xml");
    std::stringstream text;
    text << in.rdbuf();
    const std::string s = text.str();
    std::vector<NameAndType> out;
    const std::regex property(R"re(<property\s+name="([A-Za-z]+)"\s+type="([^"]+)")re");
    for (auto it = std::sregex_iterator(s.begin(), s.end(), property); it != std::sregex_iterator();
         ++it) {
        out.emplace_back((*it)[1], (*it)[2]);
    }
    return out;
}

template <typename Data> std::vector<NameAndType> tableProperties() {
    std::vector<NameAndType> out;
    for (const auto& e : propertyTable<Data>().entries()) {
        out.emplace_back(e.name, e.signature);
    }
    return out;
}

TEST(PropertyTables, EachFollowsItsInterfaceXml) {
    const auto device = xmlProperties("Device");
    ASSERT_GT(device.size(), 40U);
    EXPECT_EQ(tableProperties<DeviceData>(), device);
    EXPECT_EQ(tableProperties<core::IommuGroup>(), xmlProperties("Group"));
    EXPECT_EQ(tableProperties<core::IommuUnit>(), xmlProperties("Unit"));
    EXPECT_EQ(tableProperties<QueueData>(), xmlProperties("Queue"));
    EXPECT_EQ(tableProperties<ContextData>(), xmlProperties("Context"));
    EXPECT_STREQ(propertyTable<ContextData>().interface(), "org.svad.Svad1.Context");
    EXPECT_STREQ(propertyTable<DeviceData>().interface(), "org.svad.Svad1.Device");
}

TEST(PropertyTables, TheVtableHasOneEntryPerPropertyWithItsXmlType) {
    const sd_bus_vtable* v = propertyTable<core::IommuGroup>().vtable();
    ASSERT_EQ(v[0].type, _SD_BUS_VTABLE_START);
    std::vector<NameAndType> seen;
    for (++v; v->type != _SD_BUS_VTABLE_END; ++v) {
        ASSERT_EQ(v->type, _SD_BUS_VTABLE_PROPERTY);
        EXPECT_EQ(v->flags & SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE,
                  SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE);
        seen.emplace_back(v->x.property.member, v->x.property.signature);
    }
    EXPECT_EQ(seen, xmlProperties("Group"));
}

// The signals of dbus/org.svad.Svad1.NAME.xml: name, signature, argument names
// (each followed by a NUL, as sd-bus reads them).
std::vector<std::tuple<std::string, std::string, std::string>> xmlSignals(const std::string& name) {
    std::ifstream in(std::string(SVAD_SOURCE_DIR) + "/dbus/org.svad.Svad1." + name + ".xml");
    std::stringstream text;
    text << in.rdbuf();
    const std::string s = text.str();
    std::vector<std::tuple<std::string, std::string, std::string>> out;
    const std::regex signal(R"re(<signal\s+name="([A-Za-z]+)">([\s\S]*?)</signal>)re");
    const std::regex arg(R"re(<arg\s+name="([A-Za-z_]+)"\s+type="([^"]+)")re");
    for (auto it = std::sregex_iterator(s.begin(), s.end(), signal); it != std::sregex_iterator();
         ++it) {
        std::string signature;
        std::string names;
        const std::string body = (*it)[2];
        for (auto a = std::sregex_iterator(body.begin(), body.end(), arg);
             a != std::sregex_iterator(); ++a) {
            names += std::string((*a)[1]) + '\0';
            signature += (*a)[2];
        }
        out.emplace_back((*it)[1], signature, names);
    }
    return out;
}

// Each interface's signals are in its vtable, as its XML declares them, so that
// introspection shows them (only the context has any today).
TEST(PropertyTables, TheContextVtableCarriesItsXmlSignals) {
    auto signalsOf = [](const sd_bus_vtable* v) {
        std::vector<std::tuple<std::string, std::string, std::string>> out;
        for (++v; v->type != _SD_BUS_VTABLE_END; ++v) {
            if (v->type == _SD_BUS_VTABLE_SIGNAL) {
                std::string names;
                for (const char* n = v->x.signal.names; *n != '\0'; n += std::strlen(n) + 1) {
                    names += std::string(n) + '\0';
                }
                out.emplace_back(v->x.signal.member, v->x.signal.signature, names);
            }
        }
        return out;
    };
    const auto context = xmlSignals("Context");
    ASSERT_EQ(context.size(), 2U);
    EXPECT_EQ(std::get<0>(context[0]), "Released");
    EXPECT_EQ(std::get<2>(context[0]), std::string("reason\0", 7));
    EXPECT_EQ(signalsOf(propertyTable<ContextData>().vtable()), context);
    EXPECT_EQ(signalsOf(propertyTable<DeviceData>().vtable()), xmlSignals("Device"));
    EXPECT_EQ(signalsOf(propertyTable<core::IommuGroup>().vtable()), xmlSignals("Group"));
    EXPECT_EQ(signalsOf(propertyTable<core::IommuUnit>().vtable()), xmlSignals("Unit"));
    EXPECT_EQ(signalsOf(propertyTable<QueueData>().vtable()), xmlSignals("Queue"));
    // What Subtree::emitSignal checks a signal against before it sends it.
    const SignalSpec* released = propertyTable<ContextData>().signal("Released");
    ASSERT_NE(released, nullptr);
    EXPECT_STREQ(released->signature, "s");
    EXPECT_EQ(propertyTable<ContextData>().signal("Vm"), nullptr);
    EXPECT_EQ(propertyTable<DeviceData>().signal("Released"), nullptr);
}

struct Row {
    std::string name;
    uint32_t size = 0;
};

constexpr PropertySpec kTwo[] = {{"Name", "s", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE},
                                 {"Size", "u", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE}};

} // namespace

// The table a Row's vtable getter looks its properties up in.
template <> const PropertyTable<Row>& propertyTable<Row>() {
    static const PropertyTable<Row> table(
        "org.example.Row", kTwo,
        {property<Row>("Name", [](const Row& r) { return r.name; }),
         property<Row>("Size", [](const Row& r) { return r.size; })});
    return table;
}

namespace {

std::string refusal(std::vector<PropertyEntry<Row>> entries) {
    try {
        PropertyTable<Row> table("org.example.Row", kTwo, std::move(entries));
        return "";
    } catch (const std::logic_error& e) {
        return e.what();
    }
}

TEST(PropertyTables, ATableThatStraysFromItsXmlIsRefused) {
    auto name = property<Row>("Name", [](const Row& r) { return r.name; });
    auto size = property<Row>("Size", [](const Row& r) { return r.size; });
    EXPECT_EQ(refusal({name, size}), "");
    EXPECT_EQ(refusal({size, name}), ""); // the XML gives the order
    EXPECT_EQ(refusal({name}), "org.example.Row.Size is in the XML but has no value");
    EXPECT_EQ(refusal({name, property<Row>("Size", [](const Row& r) { return uint64_t{r.size}; })}),
              "org.example.Row.Size is 'u' in the XML but 't' here");
    EXPECT_EQ(refusal({name, size, property<Row>("Colour", [](const Row&) { return true; })}),
              "org.example.Row.Colour is not in the XML");
    EXPECT_EQ(refusal({name, name, size}), "org.example.Row.Name given twice");
}

TEST(PropertyTables, VariantsAndWireBytesComeFromTheSameValues) {
    const PropertyTable<Row>& table = propertyTable<Row>();
    const Row row{"wq0.0", 128};
    auto v = table.variants(row);
    ASSERT_EQ(v.size(), 2U);
    EXPECT_EQ(v.at("Name").get<std::string>(), "wq0.0");
    EXPECT_EQ(v.at("Size").get<uint32_t>(), 128U);
    const Row longer{std::string(1000, 'x'), 128};
    EXPECT_GE(table.wireBytes(longer), table.wireBytes(row) + 995);
    EXPECT_NE(table.find("Size"), nullptr);
    EXPECT_EQ(table.find("Colour"), nullptr);
}

// A PropertiesChanged names the properties whose values differ and whose
// changes are announced, in the XML's order; a property without
// EmitsChangedSignal is never named, whatever its value does.
TEST(PropertyTables, ChangedNamesOnlyWhatDiffersAndIsAnnounced) {
    const PropertyTable<Row>& table = propertyTable<Row>();
    auto names = [](const std::vector<const char*>& v) {
        EXPECT_EQ(v.back(), nullptr); // an strv for sd_bus_emit_properties_changed_strv
        return std::vector<std::string>(v.begin(), v.end() - 1);
    };
    const Row a{"wq0.0", 128};
    EXPECT_EQ(names(table.changed(a, a)), std::vector<std::string>{});
    EXPECT_EQ(names(table.changed(a, Row{"wq0.0", 64})), std::vector<std::string>{"Size"});
    EXPECT_EQ(names(table.changed(a, Row{"wq0.1", 64})),
              (std::vector<std::string>{"Name", "Size"}));

    constexpr PropertySpec kQuiet[] = {{"Name", "s", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE},
                                       {"Size", "u", SD_BUS_VTABLE_PROPERTY_CONST}};
    const PropertyTable<Row> quiet("org.example.Row", kQuiet,
                                   {property<Row>("Name", [](const Row& r) { return r.name; }),
                                    property<Row>("Size", [](const Row& r) { return r.size; })});
    EXPECT_EQ(names(quiet.changed(a, Row{"wq0.0", 64})), std::vector<std::string>{});
    EXPECT_EQ(names(quiet.changed(a, Row{"wq0.1", 64})), std::vector<std::string>{"Name"});
}

} // namespace
} // namespace svad::dbus
