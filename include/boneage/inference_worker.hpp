// One thread that owns the Predictor (which is not thread-safe) and runs every job a
// multi-threaded service hands it, from a bounded queue. Predictions that arrive together are
// read in one batch: one pass over the network for several uploads is cheaper than several.
//
//   boneage::InferenceWorker worker(std::make_unique<boneage::Predictor>(model, options));
//   std::future<boneage::Prediction> f = worker.predict("images/upload.png", request);
//   boneage::Prediction p = f.get();
#pragma once

#include <boneage/predict.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <opencv2/core.hpp>
#include <optional>
#include <stdexcept>
#include <thread>

namespace boneage {

struct InferenceWorkerOptions {
    std::size_t capacity = 64;  // jobs waiting at most; beyond, submitting throws QueueFull
    std::size_t batch = 8;      // predictions read in one pass at most
    // How long the worker waits, after the first prediction of a batch arrives, for others to
    // join it. Short beside a forward pass (a tenth of a second and more), long beside the gap
    // between uploads sent together.
    std::chrono::milliseconds gather{5};
};

// The queue is full: the caller should answer "busy, try again" rather than wait.
class QueueFull : public std::runtime_error {
public:
    QueueFull() : std::runtime_error("the inference queue is full") {}
};

// What a finished batch looked like, for the service's metrics.
struct BatchStats {
    std::size_t batches = 0;      // passes run
    std::size_t predictions = 0;  // predictions read in them
};

class InferenceWorker {
public:
    explicit InferenceWorker(std::unique_ptr<Predictor> predictor,
                             InferenceWorkerOptions options = {});
    // Finishes the jobs already queued, then stops the thread.
    ~InferenceWorker();
    InferenceWorker(const InferenceWorker&) = delete;
    InferenceWorker& operator=(const InferenceWorker&) = delete;

    // Queues the prediction of one file (read, screened, preprocessed and predicted as
    // Predictor::predict_batch does). Throws QueueFull, or boneage::Error (Usage) once
    // stopping.
    std::future<Prediction> predict(const std::filesystem::path& file,
                                    const PredictRequest& request);

    // Queues any other use of the predictor's model (a heatmap), run alone between batches.
    std::future<void> run(std::function<void(const Predictor&)> job);

    // Refuses new jobs, finishes the queued ones, joins the thread. Idempotent.
    void stop();

    std::size_t depth() const;  // jobs waiting now
    BatchStats stats() const;
    const Predictor& predictor() const { return *predictor_; }

private:
    // A prediction (`prediction` set) or another task (`task` and `done` set).
    struct Job {
        std::filesystem::path file;
        PredictRequest request;
        std::shared_ptr<std::promise<Prediction>> prediction;
        std::function<void(const Predictor&)> task;
        std::shared_ptr<std::promise<void>> done;
    };
    void loop();
    std::vector<Job> take_batch(std::unique_lock<std::mutex>& lock);
    void push(Job job);

    std::unique_ptr<Predictor> predictor_;
    InferenceWorkerOptions options_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Job> queue_;
    bool stopping_ = false;
    BatchStats stats_;
    std::thread thread_;
};

}  // namespace boneage
