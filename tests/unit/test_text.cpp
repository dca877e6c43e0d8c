// The text helpers: what sd-bus accepts as a string, visible escapes, cuts
// between characters.
#include "svad/core/text.h"

#include <gtest/gtest.h>
#include <string>

namespace svad::core {
namespace {

using namespace std::string_literals;

struct Case {
    const char* what;
    std::string in;
    bool valid;
    std::string sanitized;
};

TEST(Text, ValidAndSanitizedTable) {
    const Case cases[] = {
        {"empty", "", true, ""},
        {"ascii", "wq0.0 app", true, "wq0.0 app"},
        {"control characters are valid UTF-8", "a\tb\x01", true, "a\tb\x01"},
        {"two-byte", "caf\xc3\xa9", true, "caf\xc3\xa9"},
        {"three-byte", "\xe2\x82\xac", true, "\xe2\x82\xac"},
        {"four-byte", "\xf0\x9f\x98\x80", true, "\xf0\x9f\x98\x80"},
        {"U+10FFFF is the last", "\xf4\x8f\xbf\xbd", true, "\xf4\x8f\xbf\xbd"},
        {"stray 0xff",
         "dm\xff"
         "ar",
         false, "dm\\xffar"},
        {"lone continuation", "\x80x", false, "\\x80x"},
        {"cut two-byte at the end", "caf\xc3", false, "caf\\xc3"},
        {"cut three-byte before ascii", "\xe2\x82z", false, "\\xe2\\x82z"},
        {"overlong slash", "\xc0\xaf", false, "\\xc0\\xaf"},
        {"overlong three-byte", "\xe0\x80\xaf", false, "\\xe0\\x80\\xaf"},
        {"surrogate", "\xed\xa0\x80", false, "\\xed\\xa0\\x80"},
        {"past U+10FFFF", "\xf4\x90\x80\x80", false, "\\xf4\\x90\\x80\\x80"},
        {"noncharacter U+FFFF", "\xef\xbf\xbf", false, "\\xef\\xbf\\xbf"},
        {"noncharacter U+FDD0", "\xef\xb7\x90", false, "\\xef\\xb7\\x90"},
        {"noncharacter U+1FFFE", "\xf0\x9f\xbf\xbe", false, "\\xf0\\x9f\\xbf\\xbe"},
        {"NUL", "a\0b"s, false, "a\\x00b"},
        {"0xf8 lead", "\xf8\x88\x80\x80\x80", false, "\\xf8\\x88\\x80\\x80\\x80"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        EXPECT_EQ(validUtf8(c.in), c.valid);
        const std::string s = sanitizeUtf8(c.in);
        EXPECT_EQ(s, c.sanitized);
        EXPECT_TRUE(validUtf8(s));
        EXPECT_EQ(sanitizeUtf8(s), s); // applied twice, nothing changes
    }
}

TEST(Text, CutsBetweenCharactersAndStatesTheLength) {
    struct Cut {
        const char* what;
        std::string in;
        size_t max;
        std::string out;
    };
    const Cut cases[] = {
        {"fits", "abc", 3, "abc"},
        {"ascii", "abcdef", 3, "abc\u2026(6 bytes)"},
        {"before a two-byte character", "ab\xc3\xa9", 3, "ab\u2026(4 bytes)"},
        {"before a three-byte character", "a\xe2\x82\xac", 3, "a\u2026(4 bytes)"},
        {"an escape is never split", "ab\xff", 5, "ab\u2026(3 bytes)"},
        {"escapes count as four", "\xff\xff", 8, "\\xff\\xff"},
        {"nothing fits", "\xe2\x82\xac", 2, "\u2026(3 bytes)"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        const std::string s = cutUtf8(c.in, c.max);
        EXPECT_EQ(s, c.out);
        EXPECT_TRUE(validUtf8(s));
    }
}

TEST(Text, EchoOfAMegabyteIsShort) {
    const std::string huge(1 << 20, 'x');
    const std::string e = echo(huge);
    EXPECT_LT(e.size(), kEchoBytes + 32);
    EXPECT_NE(e.find("(1048576 bytes)"), std::string::npos);
    // A multibyte character across the bound is left out whole.
    std::string euro;
    for (int i = 0; i < 30; ++i) {
        euro += "\xe2\x82\xac";
    }
    EXPECT_TRUE(validUtf8(echo(euro)));
    EXPECT_EQ(echo(euro).substr(0, 63), euro.substr(0, 63));
}

} // namespace
} // namespace svad::core
