// Drawing plots with gnuplot: a script file per figure, run as a subprocess. Private to the
// eval stage.
#pragma once

#include <filesystem>
#include <string>

namespace boneage::gnuplot {

// The full path of the gnuplot executable on PATH; empty when there is none.
std::filesystem::path executable();

// "pngcairo" when this gnuplot has it (anti-aliased, better fonts), else "png".
const std::string& png_terminal();

// A path as a single-quoted gnuplot string literal.
std::string quote(const std::filesystem::path& path);

// Text as a single-quoted gnuplot string literal.
std::string quote_text(const std::string& text);

// Runs `script` with gnuplot; its output goes to `script` + ".log". Throws boneage::Error
// (NotFound) without gnuplot, or naming the script with the log's tail when gnuplot fails or
// leaves no `output`.
void run(const std::filesystem::path& script, const std::filesystem::path& output);

}  // namespace boneage::gnuplot
