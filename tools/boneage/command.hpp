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

}  // namespace boneage::cli
