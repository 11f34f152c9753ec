// boneage: bone age from hand radiographs. The CLI parses arguments and calls the library;
// every subcommand lives in its own file beside this one.
#include "build_info.hpp"
#include "command.hpp"

#include <boneage/error.hpp>

#include <malloc.h>

#include <algorithm>
#include <climits>
#include <iostream>
#include <memory>
#include <new>
#include <string>
#include <utility>

namespace boneage::cli {

namespace {
std::vector<const Command*>& registry() {
    static std::vector<const Command*> all;
    return all;
}
}  // namespace

Command::Command(std::string name_, std::string help_, Setup setup_)
    : name(std::move(name_)), help(std::move(help_)), setup(std::move(setup_)) {
    registry().push_back(this);
}

const std::vector<const Command*>& commands() { return registry(); }

namespace {

// glibc serves every block above a moving threshold (at most 32 MB) with its own mmap and
// unmaps it on free, and trims the heap's free top. A training step allocates and frees
// blocks of hundreds of MB (activations, gradients, bf16 copies of weights) every time, so
// each step paid for fresh zeroed pages: a fifth of a ResNet-50 step's time went to page
// faults in the kernel. Kept in the heap, freed blocks are reused; the process holds its peak.
void keep_freed_blocks_for_reuse() {
    mallopt(M_MMAP_THRESHOLD, INT_MAX);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

// What each exit status means; --help prints this table, so it cannot drift from the code.
// Usage errors keep 2 (DESIGN.md), CLI11's own included, so a script tells a command line to
// fix (2) from a file or disk to fix (3) from inputs that did not all succeed (1).
const std::pair<Exit, const char*> kExitMeanings[] = {
    {kOk, "every input succeeded"},
    {kSomeFailed, "some inputs failed or were rejected; the others have their results"},
    {kUsage, "usage error: an option or argument is missing, unknown or out of range"},
    {kFatal,
     "fatal error: a file the run needs (the model, the hand gate, a labels file) cannot be "
     "read or is invalid, or an output cannot be written; the run stopped"},
};

std::string exit_status_help() {
    std::string text = "Exit status:";
    for (const auto& [code, meaning] : kExitMeanings)
        text += "\n  " + std::to_string(static_cast<int>(code)) + "  " + meaning;
    return text + "\n";
}

// The user sees one line, "boneage: FILE: reason" (a boneage::Error names its file in what()).
// LibTorch's messages go on with a C++ backtrace after their first line; it is cut off.
int report(const std::string& what, int code) {
    std::cerr << "boneage: " << boneage::first_line(what) << "\n";
    return code;
}

}  // namespace

}  // namespace boneage::cli

int main(int argc, char** argv) {
    using namespace boneage::cli;
    keep_freed_blocks_for_reuse();
    CLI::App app{"boneage: skeletal age in months from a hand radiograph"};
    app.set_version_flag("--version", std::string("boneage ") + build_version() + " (" +
                                          build_commit() + ")");
    app.require_subcommand(1);

    std::vector<const Command*> sorted = commands();
    std::sort(sorted.begin(), sorted.end(),
              [](const Command* a, const Command* b) { return a->name < b->name; });
    std::vector<std::pair<CLI::App*, std::function<int()>>> runners;
    for (const Command* c : sorted) {
        CLI::App* sub = app.add_subcommand(c->name, c->help);
        runners.emplace_back(sub, c->setup(*sub));
        // After the command's own footer, if any. The app's footer is set after the loop:
        // CLI11 copies it into every command added later, which would print the table twice.
        const std::string own = sub->get_footer();
        sub->footer((own.empty() ? "" : own + "\n\n") + exit_status_help());
    }
    app.footer(exit_status_help());

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        return code == 0 ? kOk : kUsage;
    }
    try {
        for (auto& [sub, run] : runners)
            if (sub->parsed()) return run();
    } catch (const boneage::Error& e) {  // UsageError among them
        return report(e.what(), e.kind() == boneage::ErrorKind::Usage ? kUsage : kFatal);
    } catch (const std::bad_alloc&) {
        return report("out of memory", kFatal);
    } catch (const std::exception& e) {
        return report(std::string("error: ") + e.what(), kFatal);
    } catch (...) {
        return report("error: an unknown exception", kFatal);
    }
    return kUsage;
}
