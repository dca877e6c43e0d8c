#include "svad/linux/journal_sink.h"

#include <cstdio>
#include <cstdlib>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>
#include <utility>

namespace svad::linux_impl {

namespace {

constexpr const char* kJournalSocket = "/run/systemd/journal/socket";

std::string fieldName(const std::string& key) {
    std::string out;
    for (char c : key) {
        if (c >= 'a' && c <= 'z') {
            out += static_cast<char>(c - 'a' + 'A');
        } else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') {
            out += c;
        } else {
            out += '_';
        }
    }
    // Leading '_' is for trusted fields, a leading digit is not allowed.
    while (!out.empty() && (out.front() == '_' || (out.front() >= '0' && out.front() <= '9'))) {
        out.erase(out.begin());
    }
    return out.empty() ? std::string("FIELD") : out.substr(0, 64);
}

bool stderrIsJournalStream() {
    const char* env = std::getenv("JOURNAL_STREAM");
    if (env == nullptr) {
        return false;
    }
    unsigned long long dev = 0;
    unsigned long long ino = 0;
    if (std::sscanf(env, "%llu:%llu", &dev, &ino) != 2) {
        return false;
    }
    struct stat st {};
    return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

} // namespace

std::optional<LogTarget> parseLogTarget(const std::string& text) {
    if (text == "auto") {
        return LogTarget::Auto;
    }
    if (text == "journal") {
        return LogTarget::Journal;
    }
    if (text == "stderr") {
        return LogTarget::Stderr;
    }
    return std::nullopt;
}

bool useJournal(LogTarget target) {
    switch (target) {
    case LogTarget::Journal:
        return true;
    case LogTarget::Stderr:
        return false;
    case LogTarget::Auto:
        return ::isatty(STDERR_FILENO) == 0 && stderrIsJournalStream() &&
               ::access(kJournalSocket, W_OK) == 0;
    }
    return false;
}

std::vector<std::string> journalFields(log::Priority priority, const std::string& message,
                                       const log::Fields& fields) {
    std::vector<std::string> out;
    out.reserve(fields.size() + 3);
    out.push_back("MESSAGE=" + message);
    out.push_back("PRIORITY=" + std::to_string(static_cast<int>(priority)));
    out.emplace_back("SYSLOG_IDENTIFIER=svad");
    for (const auto& [key, value] : fields) {
        std::string name = fieldName(key);
        if (name == "MESSAGE" || name == "PRIORITY" || name == "SYSLOG_IDENTIFIER") {
            name.insert(0, "SVAD_"); // a caller's field never replaces the record's own
        }
        name += '=';
        name += value;
        out.push_back(std::move(name));
    }
    return out;
}

log::Sink journalSink() {
    return [](log::Priority p, const std::string& message, const log::Fields& fields) {
        const auto entries = journalFields(p, message, fields);
        std::vector<struct iovec> iov;
        iov.reserve(entries.size());
        for (const auto& e : entries) {
            iov.push_back({const_cast<char*>(e.data()), e.size()});
        }
        // sd-journal drops a record silently when journald is not there: look first.
        if (::access(kJournalSocket, W_OK) != 0 ||
            sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) < 0) {
            std::string line = log::formatLine(p, message, fields) + "\n";
            (void)std::fwrite(line.data(), 1, line.size(), stderr);
        }
    };
}

} // namespace svad::linux_impl
