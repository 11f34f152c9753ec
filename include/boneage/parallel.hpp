// A small parallel loop for per-image work (decode, preprocess), so both cores are busy.
//
//   boneage::parallel_for(paths.size(), 0, [&](std::size_t i) { out[i] = work(paths[i]); });
#pragma once

#include <cstddef>
#include <functional>

namespace boneage {

// Calls fn(i) for every i in [0, count) on `threads` threads (0: one per core). Items are
// handed out one at a time, so uneven work stays balanced. The first exception thrown by fn
// stops handing out new items and is rethrown in the caller once all threads have stopped.
void parallel_for(std::size_t count, int threads, const std::function<void(std::size_t)>& fn);

// Threads that `threads` = 0 means: the cores this process may run on.
int default_thread_count();

}  // namespace boneage
