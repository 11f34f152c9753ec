#include <boneage/parallel.hpp>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace boneage {

int default_thread_count() {
    // The cores in the affinity mask the process started with, not hardware_concurrency(): a
    // container may see more cores than it gets. OpenMP keeps that count; the calling thread's
    // own mask is narrower where OMP_PROC_BIND has bound the main thread to one core.
    return std::max(1, omp_get_num_procs());
}

void parallel_for(std::size_t count, int threads, const std::function<void(std::size_t)>& fn) {
    if (count == 0) return;
    std::size_t workers = threads > 0 ? threads : default_thread_count();
    workers = std::min(workers, count);
    if (workers == 1) {
        for (std::size_t i = 0; i < count; ++i) fn(i);
        return;
    }
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr first_error;
    std::mutex error_mutex;
    auto work = [&] {
        for (std::size_t i; !failed && (i = next++) < count;) {
            try {
                fn(i);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!first_error) first_error = std::current_exception();
                failed = true;
            }
        }
    };
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < workers; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (first_error) std::rethrow_exception(first_error);
}

}  // namespace boneage
