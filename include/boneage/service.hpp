// The reading-room service: an HTTP API (docs/API.md) and the page at / over one model, one
// hand gate and one case store. Requests are served by a pool of threads; the network runs on
// one inference thread (InferenceWorker), which batches uploads that arrive together.
//
//   boneage::Service service(boneage::load_model("default.bin"), predictor_options,
//                            boneage::open_sqlite_case_store("cases.db"), options);
//   int port = service.bind();   // options.port, or any free one when it is 0
//   service.run();               // until stop() from another thread
#pragma once

#include <boneage/case_store.hpp>
#include <boneage/inference_worker.hpp>
#include <boneage/model.hpp>
#include <boneage/predict.hpp>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>

namespace boneage {

struct ServiceOptions {
    std::string host = "127.0.0.1";                        // the address to listen on
    int port = 8080;                                       // 0: any free port (bind() says which)
    std::size_t max_upload_bytes = std::size_t(32) << 20;  // larger files are refused, 413
    int http_threads = 8;                                  // requests served at once
    // A request must arrive whole (head and body) within this of its connection being
    // accepted, or of the previous answer on it; then 408 and closed. Its answer must be
    // written within the same time. Slow clients wait for it without holding a thread.
    std::chrono::seconds request_timeout{60};
    std::chrono::seconds io_timeout{30};                   // longest gap between two bytes
    std::chrono::seconds inference_timeout{120};           // waiting for the inference thread
    InferenceWorkerOptions worker;                         // queue length, batch, gathering wait
    std::filesystem::path model_file;                      // what GET /v1/model names and hashes
    std::filesystem::path gate_file;  // the hand gate's file; empty with no gate
    std::string build;                // "boneage 0.1.0 (abc1234)"
};

class Service {
public:
    // Builds the predictor on the inference thread's behalf and registers the routes. Throws
    // boneage::Error when the model file cannot be hashed.
    Service(LoadedModel model, PredictorOptions predictor, std::unique_ptr<CaseStore> store,
            ServiceOptions options);
    ~Service();
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // Binds options.host:options.port and returns the port. Throws boneage::Error (Usage)
    // when the address cannot be bound.
    int bind();
    // Serves until stop(); returns once the requests in flight are answered and the queued
    // inference jobs have run. Call bind() first.
    void run();
    // Stops accepting connections; run() then returns. Callable from any thread, not from a
    // signal handler.
    void stop();
    bool running() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace boneage
