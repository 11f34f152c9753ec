// The report's plots (gnuplot). Each function writes its data and script to `work` and the
// figure to `png`, and throws boneage::Error when gnuplot fails. Private to the eval stage.
#pragma once

#include <boneage/evaluate.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace boneage::figures {

// MAE, RMSE and MSLE side by side for every model (the paper's Fig. 3).
void metrics_chart(const std::vector<Evaluation>& evals, const std::vector<std::string>& labels,
                   const std::filesystem::path& work, const std::filesystem::path& png);

// Loss and MAE per epoch, training and validation (the paper's Fig. 4). False, and nothing
// written, when the model carries no history.
bool training_curves(const Evaluation& eval, const std::string& label,
                     const std::filesystem::path& work, const std::filesystem::path& png);

// Predicted against true age with the identity line.
void scatter(const Evaluation& eval, const std::string& label, const std::filesystem::path& work,
             const std::filesystem::path& png);

// MAE per age band, one bar per model.
void age_band_chart(const std::vector<Evaluation>& evals, const std::vector<std::string>& labels,
                    const std::filesystem::path& work, const std::filesystem::path& png);

}  // namespace boneage::figures
