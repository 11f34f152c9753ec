// Preprocessing ahead of the network (preprocess_ahead.hpp).
#include "infer/preprocess_ahead.hpp"

#include <boneage/parallel.hpp>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>

namespace boneage::infer {

PreprocessAhead::PreprocessAhead(std::size_t count, int workers, std::size_t ahead,
                                 std::function<void(std::size_t)> prepare)
    : count_(count),
      ahead_(std::max<std::size_t>(1, ahead)),
      cores_(default_thread_count()),
      prepare_(std::move(prepare)),
      done_(count, 0) {
    const std::size_t n = std::min<std::size_t>(std::max(1, workers), std::max<std::size_t>(1, count));
    for (std::size_t w = 0; w < n; ++w) threads_.emplace_back([this, w] { work(w); });
}

PreprocessAhead::~PreprocessAhead() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
    }
    changed_.notify_all();
    for (std::thread& t : threads_) t.join();
}

void PreprocessAhead::work(std::size_t worker) {
    // A LibTorch call inside prepare (the hand gate's network) stays on this thread: the
    // network's own threads are counted against the cores in run_network.
    omp_set_num_threads(1);
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        changed_.wait(lock, [&] {
            return stop_ || next_ >= count_ ||
                   (next_ < waited_ + ahead_ && (worker == 0 || !network_busy_));
        });
        if (stop_ || next_ >= count_) return;
        const std::size_t i = next_++;
        ++active_;
        lock.unlock();
        prepare_(i);
        lock.lock();
        --active_;
        done_[i] = 1;
        changed_.notify_all();
    }
}

void PreprocessAhead::wait_for(std::size_t i) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return done_[i] != 0; });
    if (i + 1 > waited_) {
        waited_ = i + 1;
        changed_.notify_all();  // the window moved: a worker may take the next item
    }
}

void PreprocessAhead::run_network(const std::function<void()>& network) {
    int threads = 1;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        network_busy_ = true;
        // The first worker goes on preparing while the network runs, so while items remain it
        // keeps its core: a network thread on it would spin between parallel regions.
        const int preparing = next_ < count_ ? std::max<int>(1, int(active_)) : int(active_);
        threads = std::max(1, cores_ - preparing);
    }
    const int before = at::get_num_threads();
    if (threads != before) at::set_num_threads(threads);
    struct Done {
        PreprocessAhead& self;
        int before;
        ~Done() {
            if (at::get_num_threads() != before) at::set_num_threads(before);
            {
                std::lock_guard<std::mutex> lock(self.mutex_);
                self.network_busy_ = false;
            }
            self.changed_.notify_all();
        }
    } done{*this, before};
    network();
}

}  // namespace boneage::infer
