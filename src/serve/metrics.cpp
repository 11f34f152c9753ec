// Prometheus text exposition of the service's counters.
#include "serve/metrics.hpp"

#include <fmt/format.h>

namespace boneage::serve {

void Metrics::record_request(const std::string& method, const std::string& route, int code,
                             double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_[{method, route, code}];
    if (seconds < 0) return;
    ++timed_;
    seconds_sum_ += seconds;
    for (std::size_t i = 0; i < kBuckets.size(); ++i)
        if (seconds <= kBuckets[i]) {
            ++bucket_counts_[i];
            break;
        }
}

void Metrics::record_prediction(const std::string& status) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++predictions_[status];
}

std::string Metrics::render(std::size_t queue_depth, const BatchStats& batches,
                            std::size_t open_connections) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string out;
    out +=
        "# HELP boneage_http_requests_total HTTP requests answered, by route and status code.\n"
        "# TYPE boneage_http_requests_total counter\n";
    for (const auto& [key, count] : requests_) {
        const auto& [method, route, code] = key;
        out += fmt::format(
            "boneage_http_requests_total{{method=\"{}\",route=\"{}\",code=\"{}\"}} {}\n", method,
            route, code, count);
    }
    out +=
        "# HELP boneage_http_request_duration_seconds Time from routing to the answer, "
        "routed requests.\n"
        "# TYPE boneage_http_request_duration_seconds histogram\n";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kBuckets.size(); ++i) {
        cumulative += bucket_counts_[i];
        out += fmt::format("boneage_http_request_duration_seconds_bucket{{le=\"{}\"}} {}\n",
                           kBuckets[i], cumulative);
    }
    out += fmt::format("boneage_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n", timed_);
    out += fmt::format("boneage_http_request_duration_seconds_sum {}\n", seconds_sum_);
    out += fmt::format("boneage_http_request_duration_seconds_count {}\n", timed_);
    out +=
        "# HELP boneage_http_open_connections Client connections open now, whether a request "
        "is arriving on them or they wait for the next.\n"
        "# TYPE boneage_http_open_connections gauge\n";
    out += fmt::format("boneage_http_open_connections {}\n", open_connections);
    out +=
        "# HELP boneage_predictions_total Uploads read, by result status.\n"
        "# TYPE boneage_predictions_total counter\n";
    for (const char* status : {"ok", "rejected", "error"}) {
        auto it = predictions_.find(status);
        out += fmt::format("boneage_predictions_total{{status=\"{}\"}} {}\n", status,
                           it == predictions_.end() ? 0 : it->second);
    }
    auto rejected = predictions_.find("rejected");
    out +=
        "# HELP boneage_rejects_total Uploads the hand gate refused as not hand radiographs.\n"
        "# TYPE boneage_rejects_total counter\n";
    out += fmt::format("boneage_rejects_total {}\n",
                       rejected == predictions_.end() ? 0 : rejected->second);
    out +=
        "# HELP boneage_inference_queue_depth Jobs waiting for the inference thread.\n"
        "# TYPE boneage_inference_queue_depth gauge\n";
    out += fmt::format("boneage_inference_queue_depth {}\n", queue_depth);
    out +=
        "# HELP boneage_inference_batches_total Passes of the network over a batch of uploads.\n"
        "# TYPE boneage_inference_batches_total counter\n";
    out += fmt::format("boneage_inference_batches_total {}\n", batches.batches);
    out +=
        "# HELP boneage_inference_batched_predictions_total Uploads read in those batches.\n"
        "# TYPE boneage_inference_batched_predictions_total counter\n";
    out += fmt::format("boneage_inference_batched_predictions_total {}\n", batches.predictions);
    return out;
}

}  // namespace boneage::serve
