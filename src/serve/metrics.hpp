// The service's counters in Prometheus' text format (version 0.0.4): requests by route and
// status code, a latency histogram, predictions by status, the inference queue.
#pragma once

#include <array>
#include <boneage/inference_worker.hpp>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace boneage::serve {

class Metrics {
public:
    // One answered request. `route` is the route's pattern ("/v1/cases/{id}"), never the path
    // itself, so that ids do not make a series each; `seconds` < 0: not timed.
    void record_request(const std::string& method, const std::string& route, int code,
                        double seconds);
    // One prediction's status: "ok", "rejected" or "error".
    void record_prediction(const std::string& status);

    // `open_connections`: the connections the HTTP intake holds now, answered or not.
    std::string render(std::size_t queue_depth, const BatchStats& batches,
                       std::size_t open_connections) const;

private:
    // Upper bounds of the latency buckets, seconds: a health check to a queued batch.
    static constexpr std::array<double, 12> kBuckets{0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,   1.0,  2.5,   5.0,  10.0};
    mutable std::mutex mutex_;
    std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
    std::map<std::string, std::uint64_t> predictions_;
    std::array<std::uint64_t, kBuckets.size()> bucket_counts_{};  // not cumulative here
    std::uint64_t timed_ = 0;
    double seconds_sum_ = 0.0;
};

}  // namespace boneage::serve
