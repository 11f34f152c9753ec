// Training on several processes with LibTorch's own distributed engine (c10d): the environment
// that torchrun, SLURM wrappers and Kubernetes operators set, the TCPStore rendezvous, and a
// process group (Gloo over TCP; NCCL where LibTorch is built with CUDA) with the few
// collectives the trainer needs.
//
//   detail::ProcessEnv env = detail::process_env_from(std::getenv);   // RANK, WORLD_SIZE, ...
//   detail::World world = detail::World::join(env, "gloo", std::chrono::seconds(300));
//   world.all_reduce_sum(t);                                        // t summed over the ranks
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace boneage::detail {

// Where this process stands in a run, as the launchers describe it in the environment.
struct ProcessEnv {
    bool present = false;       // WORLD_SIZE was set: the run was started by a launcher
    int rank = 0;               // RANK: 0 .. world_size - 1; rank 0 writes every file
    int world_size = 1;         // WORLD_SIZE: processes in the run
    int local_rank = 0;         // LOCAL_RANK: index among the processes of this host (GPU index)
    int local_world_size = 1;   // LOCAL_WORLD_SIZE: processes on this host (threads per process)
    std::string master_addr;    // MASTER_ADDR: host of rank 0, where the TCPStore listens
    int master_port = 0;        // MASTER_PORT
    std::string socket_ifname;  // GLOO_SOCKET_IFNAME: the interface(s) Gloo binds; empty: the
                                // address the host name resolves to
    bool agent_store = false;   // TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already
                                // serves the store at MASTER_PORT, rank 0 joins it as a client
    int restart_count = 0;      // TORCHELASTIC_RESTART_COUNT: keys of each attempt apart
};

// Reads the variables through `getenv` (std::getenv, or a table in tests). Without WORLD_SIZE,
// or with WORLD_SIZE=1, the run is a single process. Throws boneage::UsageError naming the
// variable when a value is missing, not a number, or out of range.
ProcessEnv process_env_from(const std::function<const char*(const char*)>& getenv);

// The backend a run uses: `requested` ("gloo" or "nccl"), or for "auto" NCCL when training on
// a CUDA device and Gloo otherwise. Throws boneage::UsageError for an unknown name, for NCCL
// on the CPU, and for NCCL where this LibTorch was built without it.
std::string choose_backend(const std::string& requested, bool on_cuda);

// A pending collective started by World::all_reduce_sum_async.
class PendingReduce {
public:
    struct Impl;
    explicit PendingReduce(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
    // Blocks until the sum is in the tensor. Throws boneage::Error naming the peer set and
    // the reason when a peer is lost or the timeout passes.
    void wait();

private:
    std::shared_ptr<Impl> impl_;
};

// The processes of one run. A single-process World (the default) does nothing in every
// collective, so the trainer has one code path.
class World {
public:
    World() = default;  // rank 0 of 1

    // Rendezvous at MASTER_ADDR:MASTER_PORT (rank 0 serves the TCPStore and waits for the
    // others), then a process group of `backend`. `timeout` bounds the rendezvous and every
    // collective after it. Throws boneage::Error naming the address, the rank and the reason
    // when a peer does not come within the timeout or the port cannot be served.
    static World join(const ProcessEnv& env, const std::string& backend,
                      std::chrono::milliseconds timeout);

    int rank() const { return rank_; }
    int size() const { return size_; }
    bool distributed() const { return size_ > 1; }
    bool is_root() const { return rank_ == 0; }
    const std::string& backend() const { return backend_; }
    std::string where() const;  // "rank 1 of 2 (tcp://10.0.0.1:29500, gloo)", for errors

    // In place: every rank's `t` becomes the sum over the ranks (same shape and dtype on all).
    void all_reduce_sum(torch::Tensor& t);
    PendingReduce all_reduce_sum_async(torch::Tensor& t);
    // In place: every rank's `t` becomes rank `root`'s.
    void broadcast(torch::Tensor& t, int root = 0);
    // Rank 0's `bytes` on every rank (through the store, for files of any size: the
    // checkpoint a resumed run starts from). `key` names the value; use each key once.
    std::vector<std::uint8_t> share_from_root(const std::string& key,
                                              const std::vector<std::uint8_t>& bytes);
    void barrier();

    struct Impl;

private:
    std::shared_ptr<Impl> impl_;
    int rank_ = 0;
    int size_ = 1;
    std::string backend_ = "none";
};

// Every parameter and buffer of `module` from rank 0, as one flat broadcast: the same start on
// every rank whatever each drew, and rank 0's batch-norm statistics after local batch norm.
void broadcast_module(World& world, torch::nn::Module& module, bool parameters = true,
                      bool buffers = true);

}  // namespace boneage::detail
