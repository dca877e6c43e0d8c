// Structured logs for the journal: each record goes to journald through
// sd-journal with its fields (DEVICE=, GROUP=, VM=, PASID=, PLUGIN=, ...),
// MESSAGE=, PRIORITY= and SYSLOG_IDENTIFIER=svad. On a terminal, or without
// journald, records stay readable lines on stderr.
#pragma once

#include "svad/core/log.h"

#include <optional>
#include <string>
#include <vector>

namespace svad::linux_impl {

enum class LogTarget { Auto, Journal, Stderr };

// "auto", "journal", "stderr"; nullopt for anything else.
std::optional<LogTarget> parseLogTarget(const std::string& text);

// Whether records should go to the journal: `journal` always; `auto` when
// stderr is the journal's own stream (JOURNAL_STREAM names it, as systemd sets
// it for a service) and journald's socket is there; `stderr` never.
bool useJournal(LogTarget target);

// The journal fields of one record, "KEY=value" each. Field names are made
// valid for the journal (upper case, digits and '_', not starting with '_').
std::vector<std::string> journalFields(log::Priority priority, const std::string& message,
                                       const log::Fields& fields);

// A log sink that sends to the journal and falls back to a stderr line when
// the journal cannot be reached (its socket is missing, or sending fails).
log::Sink journalSink();

} // namespace svad::linux_impl
