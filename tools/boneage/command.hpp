// One subcommand of the boneage CLI. Each tools/boneage/<name>.cpp defines one and registers it
// with a static Command object; main() builds the CLI11 app from the registry.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace boneage::cli {

// Exit codes shared by every subcommand (DESIGN.md): 0 all succeeded, 1 some inputs failed,
// 2 usage error.
enum Exit : int { kOk = 0, kSomeFailed = 1, kUsage = 2 };

struct Command {
    // Adds the subcommand's options to `sub` and returns the function that runs it once
    // CLI11 has parsed the arguments. The function returns the exit code.
    using Setup = std::function<std::function<int()>(CLI::App& sub)>;

    Command(std::string name, std::string help, Setup setup);
    std::string name;
    std::string help;
    Setup setup;
};

const std::vector<const Command*>& commands();

// The options every command that runs the network shares: --batch, --threads, --precision.
inline void add_inference_options(CLI::App& sub, int& batch, int& threads,
                                  std::string& precision) {
    sub.add_option("--batch", batch, "images per forward pass")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    sub.add_option("--threads", threads, "preprocessing threads (0: one per core)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    sub.add_option("--precision", precision,
                   "network precision: auto (bf16 where the CPU has it natively), fp32 or "
                   "bf16; json output records the one used")
        ->capture_default_str();
}

}  // namespace boneage::cli
