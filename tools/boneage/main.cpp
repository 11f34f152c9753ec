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
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        return code == 0 ? kOk : kUsage;
    }
    try {
        for (auto& [sub, run] : runners)
            if (sub->parsed()) return run();
    } catch (const boneage::UsageError& e) {
        std::cerr << "boneage: " << e.what() << "\n";
        return kUsage;
    } catch (const std::exception& e) {
        std::cerr << "boneage: error: " << e.what() << "\n";
        return kSomeFailed;
    }
    return kUsage;
}
