// The inference thread: takes predictions in batches (those already waiting, and those that
// arrive within `gather` of the first), other tasks one at a time, in arrival order.
#include <boneage/error.hpp>
#include <boneage/inference_worker.hpp>
#include <exception>

namespace boneage {

InferenceWorker::InferenceWorker(std::unique_ptr<Predictor> predictor,
                                 InferenceWorkerOptions options)
    : predictor_(std::move(predictor)), options_(options) {
    if (!predictor_) throw Error(ErrorKind::Usage, "the inference worker was given no predictor");
    if (options_.batch == 0) options_.batch = 1;
    if (options_.capacity == 0) options_.capacity = 1;
    thread_ = std::thread([this] { loop(); });
}

InferenceWorker::~InferenceWorker() { stop(); }

void InferenceWorker::push(Job job) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping_) throw Error(ErrorKind::Usage, "the service is shutting down");
        if (queue_.size() >= options_.capacity) throw QueueFull();
        queue_.push_back(std::move(job));
    }
    wake_.notify_one();
}

std::future<Prediction> InferenceWorker::predict(const std::filesystem::path& file,
                                                 const PredictRequest& request) {
    Job job;
    job.file = file;
    job.request = request;
    job.prediction = std::make_shared<std::promise<Prediction>>();
    std::future<Prediction> out = job.prediction->get_future();
    push(std::move(job));
    return out;
}

std::future<void> InferenceWorker::run(std::function<void(const Predictor&)> task) {
    Job job;
    job.task = std::move(task);
    job.done = std::make_shared<std::promise<void>>();
    std::future<void> out = job.done->get_future();
    push(std::move(job));
    return out;
}

void InferenceWorker::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

std::size_t InferenceWorker::depth() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
}

BatchStats InferenceWorker::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

std::vector<InferenceWorker::Job> InferenceWorker::take_batch(std::unique_lock<std::mutex>& lock) {
    std::vector<Job> batch;
    if (!queue_.front().prediction) {  // a task runs alone
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
        return batch;
    }
    // Give uploads sent together a moment to join; stopping cuts the wait short.
    const auto deadline = std::chrono::steady_clock::now() + options_.gather;
    wake_.wait_until(lock, deadline, [&] { return stopping_ || queue_.size() >= options_.batch; });
    while (!queue_.empty() && queue_.front().prediction && batch.size() < options_.batch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
    }
    return batch;
}

void InferenceWorker::loop() {
    for (;;) {
        std::vector<Job> batch;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping, and everything queued has run
            batch = take_batch(lock);
            if (batch.front().prediction) {
                ++stats_.batches;
                stats_.predictions += batch.size();
            }
        }
        if (!batch.front().prediction) {
            try {
                batch.front().task(*predictor_);
                batch.front().done->set_value();
            } catch (...) {
                batch.front().done->set_exception(std::current_exception());
            }
            continue;
        }
        std::vector<std::filesystem::path> files;
        std::vector<PredictRequest> requests;
        for (const Job& j : batch) {
            files.push_back(j.file);
            requests.push_back(j.request);
        }
        try {
            // predict_batch keeps per-input failures per input and never throws for one.
            std::vector<Prediction> out = predictor_->predict_batch(files, requests);
            for (std::size_t i = 0; i < batch.size(); ++i)
                batch[i].prediction->set_value(std::move(out[i]));
        } catch (...) {
            for (Job& j : batch) j.prediction->set_exception(std::current_exception());
        }
    }
}

}  // namespace boneage
