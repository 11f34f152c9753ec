// Preprocessing ahead of the network: the inputs of a prediction are read and preprocessed on
// worker threads, in order, while the calling thread runs the network on the ones already
// done, without more threads busy than there are cores.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace boneage::infer {

// Calls prepare(i) for every i in [0, count), in order of i, on up to `workers` threads, never
// more than `ahead` items past the lowest one the caller has not yet waited for (so a long list
// holds a bounded number of prepared inputs). The first worker runs all along; the others take
// an item only while the network is idle (not inside run_network), when its cores would
// otherwise wait. prepare must not throw (each input keeps its own error).
class PreprocessAhead {
public:
    PreprocessAhead(std::size_t count, int workers, std::size_t ahead,
                    std::function<void(std::size_t)> prepare);
    // Stops the workers after the items they are preparing and joins them.
    ~PreprocessAhead();
    PreprocessAhead(const PreprocessAhead&) = delete;
    PreprocessAhead& operator=(const PreprocessAhead&) = delete;

    // Blocks until prepare(i) has returned; items before i may then be dropped by the caller.
    void wait_for(std::size_t i);

    // Runs `network` on the calling thread with LibTorch's intra-op threads set to the cores the
    // workers preparing at that moment leave free (at least one), and restores the count after.
    void run_network(const std::function<void()>& network);

private:
    void work(std::size_t worker);

    const std::size_t count_;
    const std::size_t ahead_;
    const int cores_;
    std::function<void(std::size_t)> prepare_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::size_t next_ = 0;      // the next item a worker takes
    std::size_t waited_ = 0;    // the lowest item the caller has not waited for
    std::size_t active_ = 0;    // workers inside prepare
    bool network_busy_ = false;
    bool stop_ = false;
    std::vector<char> done_;    // per item: prepare returned
    std::vector<std::thread> threads_;
};

}  // namespace boneage::infer
