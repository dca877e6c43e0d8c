#include "shell_scan.h"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

namespace svad::test {

namespace {

struct Word {
    std::string text;     // the literal value, or the source text when dynamic
    bool dynamic = false; // holds an expansion: its value is known only at run time
};

struct Token {
    enum Kind { Text, Separator, Redirect, FunctionDef, CaseEnd } kind = Text;
    Word word;
    char sep = 0; // for Separator: the character that made it
};

bool isNameChar(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
}

// Index just past the matching close of the bracket at `open` (s[open] is
// '(' or '{'), across quotes and nested brackets; s.size() if unmatched.
size_t skipDoubleQuoted(std::string_view s, size_t i);
size_t matchBracket(std::string_view s, size_t open) {
    const char o = s[open];
    const char c = o == '(' ? ')' : '}';
    int depth = 0;
    size_t i = open;
    while (i < s.size()) {
        char ch = s[i];
        if (ch == '\\') {
            i += 2;
            continue;
        }
        if (ch == '\'' && o == '(') {
            size_t j = s.find('\'', i + 1);
            i = j == std::string_view::npos ? s.size() : j + 1;
            continue;
        }
        if (ch == '"') {
            i = skipDoubleQuoted(s, i);
            continue;
        }
        if (ch == '#' && o == '(' && i > open &&
            std::isspace(static_cast<unsigned char>(s[i - 1])) != 0) {
            size_t eol = s.find('\n', i);
            i = eol == std::string_view::npos ? s.size() : eol;
            continue;
        }
        if (ch == o) {
            ++depth;
        } else if (ch == c) {
            if (--depth == 0) {
                return i + 1;
            }
        }
        ++i;
    }
    return s.size();
}

// s[i] is '"': index just past the closing quote.
size_t skipDoubleQuoted(std::string_view s, size_t i) {
    ++i;
    while (i < s.size()) {
        char ch = s[i];
        if (ch == '\\') {
            i += 2;
        } else if (ch == '"') {
            return i + 1;
        } else if (ch == '$' && i + 1 < s.size() && (s[i + 1] == '(' || s[i + 1] == '{')) {
            i = matchBracket(s, i + 1);
        } else if (ch == '`') {
            size_t j = s.find('`', i + 1);
            i = j == std::string_view::npos ? s.size() : j + 1;
        } else {
            ++i;
        }
    }
    return s.size();
}

class Lexer {
public:
    explicit Lexer(std::string_view s) : s_(s) {}

    std::vector<Token> tokens;
    std::vector<std::string> subprograms; // $(...), `...`, <(...) bodies, to scan on their own

    void run() {
        while (i_ < s_.size()) {
            step();
        }
        endWord();
    }

private:
    std::string_view s_;
    size_t i_ = 0;
    Word cur_;
    bool started_ = false;
    std::vector<std::pair<std::string, bool>> heredocs_; // delimiter, strip leading tabs

    char at(size_t k) const { return k < s_.size() ? s_[k] : '\0'; }

    void endWord() {
        if (started_) {
            tokens.push_back({Token::Text, cur_, 0});
        }
        cur_ = {};
        started_ = false;
    }
    void separator(char c) {
        endWord();
        tokens.push_back({Token::Separator, {}, c});
    }
    void append(std::string_view raw, bool dynamic) {
        cur_.text += raw;
        cur_.dynamic = cur_.dynamic || dynamic;
        started_ = true;
    }

    // Expansions inside double quotes, $((...)) and unquoted here-documents.
    void collectSubstitutions(std::string_view text) {
        for (size_t k = 0; k < text.size(); ++k) {
            if (text[k] == '\\') {
                ++k;
            } else if (text[k] == '$' && k + 1 < text.size() && text[k + 1] == '(' &&
                       (k + 2 >= text.size() || text[k + 2] != '(')) {
                size_t end = matchBracket(text, k + 1);
                subprograms.emplace_back(text.substr(k + 2, end - k - 3));
                k = end - 1;
            } else if (text[k] == '`') {
                size_t end = text.find('`', k + 1);
                if (end == std::string_view::npos) {
                    break;
                }
                subprograms.emplace_back(text.substr(k + 1, end - k - 1));
                k = end;
            }
        }
    }

    void skipHeredocs() {
        for (const auto& [delim, stripTabs] : heredocs_) {
            while (i_ < s_.size()) {
                size_t eol = s_.find('\n', i_);
                if (eol == std::string_view::npos) {
                    eol = s_.size();
                }
                std::string_view line = s_.substr(i_, eol - i_);
                i_ = std::min(eol + 1, s_.size());
                if (stripTabs) {
                    line.remove_prefix(std::min(line.find_first_not_of('\t'), line.size()));
                }
                if (line == delim) {
                    break;
                }
            }
        }
        heredocs_.clear();
    }

    void heredoc() {
        // s_[i_] is past "<<" or "<<-": the delimiter word follows.
        bool stripTabs = false;
        if (at(i_) == '-') {
            stripTabs = true;
            ++i_;
        }
        while (at(i_) == ' ' || at(i_) == '\t') {
            ++i_;
        }
        std::string delim;
        while (i_ < s_.size() &&
               std::string_view(" \t\n;&|<>()").find(s_[i_]) == std::string_view::npos) {
            if (s_[i_] != '\'' && s_[i_] != '"' && s_[i_] != '\\') {
                delim += s_[i_];
            }
            ++i_;
        }
        heredocs_.emplace_back(delim, stripTabs);
    }

    void redirection() {
        // A word of digits just before the operator is its fd, not an argument.
        if (started_ && !cur_.dynamic && !cur_.text.empty() &&
            std::all_of(cur_.text.begin(), cur_.text.end(),
                        [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; })) {
            cur_ = {};
            started_ = false;
        }
        endWord();
        if (s_.substr(i_, 3) == "<<<") {
            i_ += 3;
        } else if (s_.substr(i_, 2) == "<<") {
            i_ += 2;
            heredoc();
            return;
        } else {
            ++i_;
            while (at(i_) == '>' || at(i_) == '&' || at(i_) == '|' || at(i_) == '<') {
                ++i_;
            }
            if (at(i_) == '-') { // >&- closes
                ++i_;
                return;
            }
        }
        tokens.push_back({Token::Redirect, {}, 0});
    }

    void step() {
        const char c = s_[i_];
        const char n = at(i_ + 1);
        if (c == '\\' && n == '\n') {
            i_ += 2;
        } else if (c == ' ' || c == '\t') {
            endWord();
            ++i_;
        } else if (c == '\n') {
            separator('\n');
            ++i_;
            skipHeredocs();
        } else if (c == '#' && !started_) {
            while (i_ < s_.size() && s_[i_] != '\n') {
                ++i_;
            }
        } else if (c == '\\') {
            append(s_.substr(i_ + 1, 1), false);
            i_ += 2;
        } else if (c == '\'' || (c == '$' && n == '\'')) {
            size_t from = c == '$' ? i_ + 2 : i_ + 1;
            size_t j = s_.find('\'', from);
            j = j == std::string_view::npos ? s_.size() : j;
            append(s_.substr(from, j - from), false);
            i_ = j + 1;
        } else if (c == '"') {
            size_t end = skipDoubleQuoted(s_, i_);
            std::string_view body = s_.substr(i_ + 1, end - i_ - 2);
            collectSubstitutions(body);
            append(body, body.find_first_of("$`") != std::string_view::npos);
            i_ = end;
        } else if (c == '`') {
            size_t j = s_.find('`', i_ + 1);
            j = j == std::string_view::npos ? s_.size() : j;
            subprograms.emplace_back(s_.substr(i_ + 1, j - i_ - 1));
            append(s_.substr(i_, j + 1 - i_), true);
            i_ = j + 1;
        } else if (c == '$' && (n == '(' || n == '{')) {
            size_t end = matchBracket(s_, i_ + 1);
            std::string_view whole = s_.substr(i_, end - i_);
            if (n == '(' && at(i_ + 2) == '(') {
                collectSubstitutions(whole.substr(3));
            } else if (n == '(') {
                subprograms.emplace_back(s_.substr(i_ + 2, end - i_ - 3));
            } else {
                collectSubstitutions(whole.substr(2));
            }
            append(whole, true);
            i_ = end;
        } else if (c == '$') {
            size_t j = i_ + 1;
            if (isNameChar(at(j))) {
                while (isNameChar(at(j))) {
                    ++j;
                }
            } else if (j < s_.size() &&
                       std::string_view("@*#?$!-").find(s_[j]) != std::string_view::npos) {
                ++j;
            }
            append(s_.substr(i_, j - i_), j > i_ + 1);
            i_ = j;
        } else if ((c == '<' || c == '>') && n == '(') {
            size_t end = matchBracket(s_, i_ + 1);
            subprograms.emplace_back(s_.substr(i_ + 2, end - i_ - 3));
            append(s_.substr(i_, end - i_), true);
            i_ = end;
        } else if (c == '<' || c == '>' || (c == '&' && n == '>')) {
            redirection();
        } else if (c == ';' || c == '&' || c == '|') {
            endWord();
            if (c == ';' && n == ';') {
                i_ += at(i_ + 2) == '&' ? 3 : 2;
                tokens.push_back({Token::CaseEnd, {}, 0});
                return;
            }
            i_ += (n == c || (c == ';' && n == '&') || (c == '|' && n == '&')) ? 2 : 1;
            tokens.push_back({Token::Separator, {}, c});
        } else if (c == '(') {
            if (started_ && !cur_.text.empty() && cur_.text.back() == '=') { // name=(array)
                size_t end = matchBracket(s_, i_);
                append(s_.substr(i_, end - i_), true);
                i_ = end;
                return;
            }
            size_t k = i_ + 1;
            while (at(k) == ' ' || at(k) == '\t') {
                ++k;
            }
            if (started_ && at(k) == ')') { // name() — a function definition
                endWord();
                tokens.push_back({Token::FunctionDef, {}, 0});
                i_ = k + 1;
                return;
            }
            if (!started_ && n == '(') { // (( arithmetic ))
                size_t end = matchBracket(s_, i_);
                collectSubstitutions(s_.substr(i_ + 2, end - i_ - 2));
                i_ = end;
                return;
            }
            separator('(');
            ++i_;
        } else if (c == ')') {
            separator(')');
            ++i_;
        } else {
            append(s_.substr(i_, 1), false);
            ++i_;
        }
    }
};

const std::set<std::string, std::less<>>& builtins() {
    static const std::set<std::string, std::less<>> names = {
        ".",       ":",      "[",       "[[",        "alias",    "bg",       "bind",    "break",
        "builtin", "caller", "cd",      "command",   "compgen",  "complete", "compopt", "continue",
        "declare", "dirs",   "disown",  "echo",      "enable",   "eval",     "exec",    "exit",
        "export",  "false",  "fc",      "fg",        "getopts",  "hash",     "help",    "history",
        "jobs",    "kill",   "let",     "local",     "logout",   "mapfile",  "popd",    "printf",
        "pushd",   "pwd",    "read",    "readarray", "readonly", "return",   "set",     "shift",
        "shopt",   "source", "suspend", "test",      "times",    "trap",     "true",    "type",
        "typeset", "ulimit", "umask",   "unalias",   "unset",    "wait"};
    return names;
}

bool isAssignment(const Word& w) {
    const std::string& t = w.text;
    size_t k = 0;
    if (t.empty() || std::isdigit(static_cast<unsigned char>(t[0])) != 0) {
        return false;
    }
    while (k < t.size() && isNameChar(t[k])) {
        ++k;
    }
    if (k == 0) {
        return false;
    }
    if (k < t.size() && t[k] == '[') {
        k = t.find(']', k);
        if (k == std::string::npos) {
            return false;
        }
        ++k;
    }
    if (k < t.size() && t[k] == '+') {
        ++k;
    }
    return k < t.size() && t[k] == '=';
}

struct SimpleCommand {
    std::vector<Word> words;
    std::string function; // the function whose body holds it, if any
};

// Tokens into simple commands, with the reserved words, case patterns, for
// heads and function definitions taken out.
std::vector<SimpleCommand> parse(const std::vector<Token>& tokens, ShellScan& out) {
    std::vector<SimpleCommand> commands;
    SimpleCommand cur;
    bool skipTarget = false;
    bool caseHead = false;
    bool inPattern = false;
    int caseDepth = 0;
    bool forHead = false;
    bool functionKeyword = false;
    std::string pendingFunction;
    int braceDepth = 0;
    std::vector<std::pair<std::string, int>> bodies; // function, brace depth of its body

    auto flush = [&]() {
        if (!cur.words.empty()) {
            cur.function = bodies.empty() ? std::string() : bodies.back().first;
            commands.push_back(cur);
        }
        cur = {};
    };

    for (const Token& tok : tokens) {
        switch (tok.kind) {
        case Token::Redirect:
            skipTarget = true;
            break;
        case Token::FunctionDef:
            if (!cur.words.empty()) {
                pendingFunction = cur.words.back().text;
                out.functions.insert(pendingFunction);
                cur.words.pop_back();
            }
            break;
        case Token::CaseEnd:
            flush();
            inPattern = caseDepth > 0;
            break;
        case Token::Separator:
            flush();
            forHead = false;
            if (inPattern && tok.sep == ')') {
                inPattern = false;
            }
            break;
        case Token::Text: {
            const Word& w = tok.word;
            if (skipTarget) {
                skipTarget = false;
                break;
            }
            if (caseHead) {
                if (w.text == "in" && !w.dynamic) {
                    caseHead = false;
                    inPattern = true;
                    ++caseDepth;
                }
                break;
            }
            if (inPattern) {
                if (w.text == "esac" && !w.dynamic) {
                    inPattern = false;
                    --caseDepth;
                }
                break;
            }
            if (forHead) {
                break;
            }
            if (functionKeyword) {
                functionKeyword = false;
                pendingFunction = w.text;
                out.functions.insert(w.text);
                break;
            }
            if (cur.words.empty() && !w.dynamic) {
                if (isAssignment(w)) {
                    break;
                }
                const std::string& t = w.text;
                if (t == "case") {
                    caseHead = true;
                    break;
                }
                if (t == "for" || t == "select") {
                    forHead = true;
                    break;
                }
                if (t == "function") {
                    functionKeyword = true;
                    break;
                }
                if (t == "{") {
                    ++braceDepth;
                    if (!pendingFunction.empty()) {
                        bodies.emplace_back(pendingFunction, braceDepth);
                        pendingFunction.clear();
                    }
                    break;
                }
                if (t == "}") {
                    if (!bodies.empty() && bodies.back().second == braceDepth) {
                        bodies.pop_back();
                    }
                    --braceDepth;
                    break;
                }
                if (t == "esac") {
                    caseDepth = std::max(0, caseDepth - 1);
                    inPattern = false;
                    break;
                }
                static const std::set<std::string, std::less<>> reserved = {
                    "if",   "then",  "else",  "elif", "fi",   "do",
                    "done", "while", "until", "!",    "time", "in"};
                if (reserved.count(t) != 0) {
                    break;
                }
            }
            cur.words.push_back(w);
            break;
        }
        }
    }
    flush();
    return commands;
}

bool isOption(const Word& w) {
    return !w.dynamic && w.text.size() > 1 && w.text[0] == '-';
}

// The program a path names, as the project's scripts write it:
// "$here/build-kernel.sh" and "./packaging/quickstart.sh" give the part after
// the leading variable or "./".
std::string pathTail(const std::string& text) {
    std::string t = text;
    if (t.rfind("./", 0) == 0) {
        return t.substr(2);
    }
    if (!t.empty() && t[0] == '$') {
        size_t slash = t.find('/');
        return slash == std::string::npos ? std::string() : t.substr(slash + 1);
    }
    return t;
}

void resolve(const SimpleCommand& cmd, ShellScan& out, std::vector<std::string>& subprograms) {
    const auto& w = cmd.words;
    size_t k = 0;
    while (k < w.size()) {
        const Word& word = w[k];
        if (word.dynamic) {
            std::string tail = pathTail(word.text);
            if (word.text.find('/') != std::string::npos && tail.find('$') == std::string::npos &&
                !tail.empty()) {
                out.paths.insert(tail);
            }
            return;
        }
        const std::string& t = word.text;
        if (out.functions.count(t) != 0) {
            if (out.wrappers.count(t) == 0) {
                return;
            }
            ++k;
            continue;
        }
        if (t == "command") {
            if (k + 1 < w.size() && (w[k + 1].text == "-v" || w[k + 1].text == "-V")) {
                return;
            }
            ++k;
            continue;
        }
        if (t == "exec" || t == "builtin" || t == "sudo") {
            for (++k; k < w.size() && isOption(w[k]); ++k) {
            }
            continue;
        }
        if (t == "trap" || t == "eval") {
            if (t == "trap" && k + 1 < w.size() && !w[k + 1].dynamic && w[k + 1].text != "-") {
                subprograms.push_back(w[k + 1].text);
            }
            return;
        }
        if (builtins().count(t) != 0) {
            return;
        }
        if (t.find('/') != std::string::npos) {
            out.paths.insert(pathTail(t));
            return;
        }
        out.commands.insert(t);
        // Programs that run the command their arguments name.
        if (t == "env") {
            for (++k; k < w.size() && (isOption(w[k]) || isAssignment(w[k])); ++k) {
            }
        } else if (t == "timeout") {
            for (++k; k < w.size() && isOption(w[k]); ++k) {
                if ((w[k].text == "-k" || w[k].text == "-s") && k + 1 < w.size()) {
                    ++k;
                }
            }
            ++k; // the duration
        } else if (t == "chroot") {
            for (++k; k < w.size() && isOption(w[k]); ++k) {
            }
            ++k; // the new root
        } else if (t == "nice" || t == "nohup" || t == "setsid" || t == "xargs" || t == "stdbuf") {
            for (++k; k < w.size() && isOption(w[k]); ++k) {
            }
        } else {
            return;
        }
    }
}

void scanInto(std::string_view script, ShellScan& out) {
    Lexer lexer(script);
    lexer.run();
    std::vector<SimpleCommand> commands = parse(lexer.tokens, out);
    for (const auto& c : commands) {
        if (!c.function.empty() && c.words.front().dynamic && c.words.front().text == "$@") {
            out.wrappers.insert(c.function);
        }
    }
    std::vector<std::string> subprograms = std::move(lexer.subprograms);
    for (const auto& c : commands) {
        resolve(c, out, subprograms);
    }
    for (const auto& sub : subprograms) {
        scanInto(sub, out);
    }
}

} // namespace

ShellScan scanShell(std::string_view script, const ShellScan& known) {
    ShellScan out;
    out.functions = known.functions;
    out.wrappers = known.wrappers;
    scanInto(script, out);
    return out;
}

} // namespace svad::test
