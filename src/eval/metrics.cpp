// Regression metrics of the paper (Section VI): MAE and RMSE in months, and the training loss,
// mean squared logarithmic error, computed exactly as Keras does so numbers compare.
#include <boneage/evaluate.hpp>

#include <boneage/error.hpp>

#include <algorithm>
#include <cmath>

namespace boneage {

namespace {
constexpr double kEpsilon = 1e-7;  // Keras' backend epsilon, the floor of both log arguments
}

double squared_log_error(double truth, double predicted) {
    double d = std::log(std::max(predicted, kEpsilon) + 1.0) -
               std::log(std::max(truth, kEpsilon) + 1.0);
    return d * d;
}

Metrics compute_metrics(const std::vector<double>& truth, const std::vector<double>& predicted) {
    if (truth.size() != predicted.size())
        throw Error(ErrorKind::Usage, "metrics need as many predictions (" +
                                          std::to_string(predicted.size()) + ") as labels (" +
                                          std::to_string(truth.size()) + ")");
    Metrics m;
    m.n = truth.size();
    if (m.n == 0) return m;
    double abs_sum = 0, sq_sum = 0, sle_sum = 0;
    for (std::size_t i = 0; i < m.n; ++i) {
        double e = predicted[i] - truth[i];
        abs_sum += std::abs(e);
        sq_sum += e * e;
        sle_sum += squared_log_error(truth[i], predicted[i]);
    }
    double n = double(m.n);
    m.mae = abs_sum / n;
    m.rmse = std::sqrt(sq_sum / n);
    m.msle = sle_sum / n;
    return m;
}

const std::vector<AgeBand>& default_age_bands() {
    static const std::vector<AgeBand> bands = {
        {"0-2 y", 0, 24},     {"2-5 y", 24, 60},    {"5-9 y", 60, 108},
        {"9-12 y", 108, 144}, {"12-15 y", 144, 180}, {"15-19 y", 180, 228},
    };
    return bands;
}

std::vector<std::pair<AgeBand, Metrics>> metrics_by_age_band(const std::vector<ItemResult>& items,
                                                             const std::vector<AgeBand>& bands) {
    std::vector<std::pair<AgeBand, Metrics>> out;
    for (std::size_t b = 0; b < bands.size(); ++b) {
        bool last = b + 1 == bands.size();
        std::vector<double> truth, predicted;
        for (const ItemResult& r : items) {
            bool inside = r.true_months >= bands[b].from_months &&
                          (r.true_months < bands[b].to_months || last);
            if (b == 0 && r.true_months < bands[b].from_months) inside = true;
            if (!inside) continue;
            truth.push_back(r.true_months);
            predicted.push_back(r.predicted_months);
        }
        if (!truth.empty()) out.emplace_back(bands[b], compute_metrics(truth, predicted));
    }
    return out;
}

}  // namespace boneage
