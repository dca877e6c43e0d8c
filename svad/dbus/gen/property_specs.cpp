// Build tool: writes the properties and signals of a D-Bus interface, read
// from its XML in dbus/, as C++ tables (name, signature, sd-bus flags; a
// signal's argument names), so that the vtables svad registers by hand come
// from the same XML as sdbus-c++'s adaptors.
//
//   svad-property-specs INTERFACE.xml NAME OUT.h
//
// NAME is the C++ namespace the tables go in (Device: spec::Device::kProperties,
// spec::Device::kSignals).
// A property's EmitsChangedSignal annotation, or else its interface's, gives
// its flags: true (the default) emits the change, invalidates emits the name,
// const never changes, false says nothing.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <memory>
#include <string>
#include <vector>

namespace {

std::string attr(xmlNode* n, const char* name) {
    xmlChar* v = xmlGetProp(n, reinterpret_cast<const xmlChar*>(name));
    if (v == nullptr) {
        return {};
    }
    std::string out(reinterpret_cast<const char*>(v));
    xmlFree(v);
    return out;
}

bool named(xmlNode* n, const char* name) {
    return n->type == XML_ELEMENT_NODE &&
           xmlStrcmp(n->name, reinterpret_cast<const xmlChar*>(name)) == 0;
}

// The EmitsChangedSignal annotation among `n`'s children; `fallback` if none.
std::string emits(xmlNode* n, const std::string& fallback) {
    for (xmlNode* c = n->children; c != nullptr; c = c->next) {
        if (named(c, "annotation") &&
            attr(c, "name") == "org.freedesktop.DBus.Property.EmitsChangedSignal") {
            return attr(c, "value");
        }
    }
    return fallback;
}

bool flagsOf(const std::string& emit, std::string& out) {
    if (emit == "true") {
        out = "SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE";
    } else if (emit == "invalidates") {
        out = "SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION";
    } else if (emit == "const") {
        out = "SD_BUS_VTABLE_PROPERTY_CONST";
    } else if (emit == "false") {
        out = "0";
    } else {
        return false;
    }
    return true;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: svad-property-specs INTERFACE.xml NAME OUT.h\n";
        return 2;
    }
    std::unique_ptr<xmlDoc, void (*)(xmlDoc*)> doc(xmlReadFile(argv[1], nullptr, XML_PARSE_NONET),
                                                   xmlFreeDoc);
    if (!doc) {
        std::cerr << argv[1] << ": not well-formed XML\n";
        return 1;
    }
    xmlNode* root = xmlDocGetRootElement(doc.get());
    xmlNode* iface = nullptr;
    for (xmlNode* c = root != nullptr ? root->children : nullptr; c != nullptr; c = c->next) {
        if (named(c, "interface")) {
            if (iface != nullptr) {
                std::cerr << argv[1] << ": more than one interface\n";
                return 1;
            }
            iface = c;
        }
    }
    if (iface == nullptr) {
        std::cerr << argv[1] << ": no interface\n";
        return 1;
    }
    const std::string ifaceEmits = emits(iface, "true");
    std::string source = argv[1];
    source = source.substr(source.find_last_of('/') + 1);
    std::string out = "// Generated from dbus/" + source +
                      " by svad-property-specs: do not edit.\n"
                      "#pragma once\n\n#include \"svad/dbus/property_spec.h\"\n\n"
                      "namespace svad::dbus::spec::" +
                      argv[2] + " {\n\ninline constexpr const char* kInterface = \"" +
                      attr(iface, "name") +
                      "\";\n\ninline constexpr PropertySpec kProperties[] = {\n";
    size_t count = 0;
    for (xmlNode* p = iface->children; p != nullptr; p = p->next) {
        if (!named(p, "property")) {
            continue;
        }
        const std::string name = attr(p, "name");
        const std::string type = attr(p, "type");
        const std::string access = attr(p, "access");
        std::string flags;
        if (name.empty() || type.empty() || !flagsOf(emits(p, ifaceEmits), flags)) {
            std::cerr << argv[1] << ": property '" << name
                      << "' lacks a name or type, or has an unknown EmitsChangedSignal\n";
            return 1;
        }
        if (access != "read") {
            std::cerr << argv[1] << ": property '" << name << "' is not read-only\n";
            return 1;
        }
        out.append("    {\"").append(name).append("\", \"").append(type).append("\", ");
        out.append(flags).append("},\n");
        ++count;
    }
    if (count == 0) {
        out += "    {nullptr, nullptr, 0},\n";
    }
    out += "};\n\ninline constexpr SignalSpec kSignals[] = {\n";
    count = 0;
    for (xmlNode* s = iface->children; s != nullptr; s = s->next) {
        if (!named(s, "signal")) {
            continue;
        }
        const std::string name = attr(s, "name");
        std::string signature;
        std::string names; // each argument's name and a NUL, as sd-bus reads them
        for (xmlNode* a = s->children; a != nullptr; a = a->next) {
            if (!named(a, "arg")) {
                continue;
            }
            const std::string argName = attr(a, "name");
            const std::string type = attr(a, "type");
            if (argName.empty() || type.empty() ||
                argName.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
                    std::string::npos ||
                (argName[0] >= '0' && argName[0] <= '9')) {
                std::cerr << argv[1] << ": an argument of signal '" << name
                          << "' lacks a type or a plain name\n";
                return 1;
            }
            signature += type;
            names += argName + "\\000"; // three digits: a NUL, whatever follows
        }
        if (name.empty()) {
            std::cerr << argv[1] << ": a signal without a name\n";
            return 1;
        }
        out.append("    {\"").append(name).append("\", \"").append(signature).append("\", \"");
        out.append(names).append("\"},\n");
        ++count;
    }
    if (count == 0) {
        out += "    {nullptr, nullptr, nullptr},\n";
    }
    out += "};\n\n} // namespace svad::dbus::spec::" + std::string(argv[2]) + "\n";
    // Written whole or not at all: a half header would build and mislead.
    const std::string tmp = std::string(argv[3]) + ".tmp";
    {
        std::ofstream file(tmp);
        file << out;
        file.close();
        if (!file) {
            std::cerr << tmp << ": cannot write\n";
            (void)std::remove(tmp.c_str());
            return 1;
        }
    }
    if (std::rename(tmp.c_str(), argv[3]) != 0) {
        std::cerr << argv[3] << ": cannot write\n";
        (void)std::remove(tmp.c_str());
        return 1;
    }
    return 0;
}
