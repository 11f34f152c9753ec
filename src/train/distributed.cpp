// The process group of a run: the launchers' environment, the TCPStore rendezvous and the
// c10d collectives, with every failure turned into an error that names the peer set.
//
// Debian's LibTorch ships c10d in libtorch_cpu, with Gloo; its headers show the Gloo process
// group only to code compiled with USE_C10D_GLOO (CMakeLists.txt sets it for this file alone).
#include "train/distributed.hpp"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef BONEAGE_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <boneage/error.hpp>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <map>
#include <sstream>

namespace boneage::detail {

namespace {

int int_variable(const std::function<const char*(const char*)>& getenv, const char* name,
                 int fallback, int lowest, int highest) {
    const char* text = getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lowest || v > highest)
        throw UsageError(fmt::format("{}={}: expected a whole number from {} to {}", name, text,
                                     lowest, highest));
    return static_cast<int>(v);
}

std::string string_variable(const std::function<const char*(const char*)>& getenv,
                            const char* name) {
    const char* text = getenv(name);
    return text == nullptr ? std::string() : std::string(text);
}

std::string first_line_of(const std::exception& e) {
    if (const auto* c = dynamic_cast<const c10::Error*>(&e))
        return first_line(c->what_without_backtrace());
    return first_line(e.what());
}

std::vector<std::string> split_commas(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream in(text);
    std::string part;
    while (std::getline(in, part, ','))
        if (!part.empty()) out.push_back(part);
    return out;
}

}  // namespace

ProcessEnv process_env_from(const std::function<const char*(const char*)>& getenv) {
    ProcessEnv env;
    const int max_ranks = 1 << 20;
    env.world_size = int_variable(getenv, "WORLD_SIZE", 1, 1, max_ranks);
    if (env.world_size == 1) return ProcessEnv{};  // one process: nothing to join
    env.present = true;
    if (string_variable(getenv, "RANK").empty())
        throw UsageError(fmt::format("WORLD_SIZE={} but RANK is not set: each process needs its "
                                     "rank (0 to {})",
                                     env.world_size, env.world_size - 1));
    env.rank = int_variable(getenv, "RANK", 0, 0, env.world_size - 1);
    env.local_rank = int_variable(getenv, "LOCAL_RANK", 0, 0, env.world_size - 1);
    env.local_world_size = int_variable(getenv, "LOCAL_WORLD_SIZE", 1, 1, env.world_size);
    env.master_addr = string_variable(getenv, "MASTER_ADDR");
    if (env.master_addr.empty())
        throw UsageError(fmt::format("WORLD_SIZE={} but MASTER_ADDR is not set: the host of "
                                     "rank 0, where the processes meet",
                                     env.world_size));
    if (string_variable(getenv, "MASTER_PORT").empty())
        throw UsageError(fmt::format("WORLD_SIZE={} but MASTER_PORT is not set: the TCP port "
                                     "rank 0 listens on (torchrun's default is 29500)",
                                     env.world_size));
    env.master_port = int_variable(getenv, "MASTER_PORT", 0, 1, 65535);
    env.socket_ifname = string_variable(getenv, "GLOO_SOCKET_IFNAME");
    const std::string agent = string_variable(getenv, "TORCHELASTIC_USE_AGENT_STORE");
    env.agent_store = agent == "True" || agent == "true" || agent == "1";
    env.restart_count = int_variable(getenv, "TORCHELASTIC_RESTART_COUNT", 0, 0, 1 << 20);
    return env;
}

std::string choose_backend(const std::string& requested, bool on_cuda) {
#ifdef BONEAGE_WITH_NCCL
    const bool have_nccl = true;
#else
    const bool have_nccl = false;
#endif
    if (requested == "auto") return on_cuda && have_nccl ? "nccl" : "gloo";
    if (requested == "gloo") return requested;
    if (requested != "nccl")
        throw UsageError(fmt::format("unknown backend '{}' (gloo, nccl or auto)", requested));
    if (!have_nccl)
        throw UsageError("backend nccl: this build's LibTorch has no NCCL (it was built without "
                         "CUDA); use --backend gloo");
    if (!on_cuda) throw UsageError("backend nccl needs --device cuda; on the CPU use gloo");
    return requested;
}

struct PendingReduce::Impl {
    c10::intrusive_ptr<c10d::Work> work;
    std::string where;
};

void PendingReduce::wait() {
    try {
        impl_->work->wait();
    } catch (const std::exception& e) {
        throw Error(ErrorKind::NotFound,
                    fmt::format("{}: all-reduce failed, a peer is gone or timed out: {}",
                                impl_->where, first_line_of(e)));
    }
}

struct World::Impl {
    c10::intrusive_ptr<c10d::Store> store;
    c10::intrusive_ptr<c10d::ProcessGroup> group;
    std::string address;  // tcp://host:port
};

std::string World::where() const {
    if (!impl_) return "rank 0 of 1";
    return fmt::format("rank {} of {} ({}, {})", rank_, size_, impl_->address, backend_);
}

World World::join(const ProcessEnv& env, const std::string& backend,
                  std::chrono::milliseconds timeout) {
    World w;
    if (env.world_size <= 1) return w;
    w.rank_ = env.rank;
    w.size_ = env.world_size;
    w.backend_ = backend;
    w.impl_ = std::make_shared<Impl>();
    w.impl_->address = fmt::format("tcp://{}:{}", env.master_addr, env.master_port);
    const std::string seconds = fmt::format("{:.0f} s", timeout.count() / 1000.0);
    try {
        c10d::TCPStoreOptions o;
        o.port = static_cast<std::uint16_t>(env.master_port);
        o.isServer = env.rank == 0 && !env.agent_store;
        o.numWorkers = static_cast<std::size_t>(env.world_size);
        o.waitWorkers = !env.agent_store;  // rank 0 returns only when every rank has connected
        o.timeout = timeout;
        // Under torchrun the store is shared with its agent: this run's keys go apart.
        w.impl_->store = c10::make_intrusive<c10d::PrefixStore>(
            fmt::format("boneage/attempt_{}", env.restart_count),
            c10::make_intrusive<c10d::TCPStore>(env.master_addr, o));
    } catch (const std::exception& e) {
        throw Error(ErrorKind::NotFound,
                    fmt::format("{}: rendezvous failed within {} ({}): {}", w.where(), seconds,
                                env.rank == 0 ? "not every rank connected to this one"
                                              : "rank 0 could not be reached",
                                first_line_of(e)));
    }
    try {
        if (backend == "gloo") {
            auto options = c10d::ProcessGroupGloo::Options::create(timeout);
            if (env.socket_ifname.empty())
                options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
            for (const std::string& name : split_commas(env.socket_ifname))
                options->devices.push_back(
                    c10d::ProcessGroupGloo::createDeviceForInterface(name));
            w.impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
                w.impl_->store, env.rank, env.world_size, options);
        } else {
#ifdef BONEAGE_WITH_NCCL
            auto options = c10d::ProcessGroupNCCL::Options::create();
            options->timeout = timeout;
            w.impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
                w.impl_->store, env.rank, env.world_size, options);
#else
            throw UsageError("backend " + backend + " is not in this build (gloo is)");
#endif
        }
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {
        throw Error(ErrorKind::NotFound,
                    fmt::format("{}: rendezvous failed within {}: the process group did not "
                                "form (a rank did not join, or cannot reach this one): {}",
                                w.where(), seconds, first_line_of(e)));
    }
    w.barrier();  // every rank is in before the first real collective
    return w;
}

PendingReduce World::all_reduce_sum_async(torch::Tensor& t) {
    auto p = std::make_shared<PendingReduce::Impl>();
    p->where = where();
    if (!distributed()) return PendingReduce(p);
    std::vector<torch::Tensor> tensors{t};
    try {
        p->work = impl_->group->allreduce(tensors);
    } catch (const std::exception& e) {
        throw Error(ErrorKind::NotFound,
                    fmt::format("{}: all-reduce failed: {}", where(), first_line_of(e)));
    }
    return PendingReduce(p);
}

void World::all_reduce_sum(torch::Tensor& t) {
    if (!distributed()) return;
    all_reduce_sum_async(t).wait();
}

void World::broadcast(torch::Tensor& t, int root) {
    if (!distributed()) return;
    std::vector<torch::Tensor> tensors{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    try {
        impl_->group->broadcast(tensors, o)->wait();
    } catch (const std::exception& e) {
        throw Error(ErrorKind::NotFound,
                    fmt::format("{}: broadcast from rank {} failed, a peer is gone or timed "
                                "out: {}",
                                where(), root, first_line_of(e)));
    }
}

std::vector<std::uint8_t> World::share_from_root(const std::string& key,
                                                 const std::vector<std::uint8_t>& bytes) {
    if (!distributed()) return bytes;
    try {
        if (is_root()) {
            impl_->store->set("boneage/" + key, bytes);
            return bytes;
        }
        return impl_->store->get("boneage/" + key);  // waits up to the store's timeout
    } catch (const std::exception& e) {
        throw Error(ErrorKind::NotFound, fmt::format("{}: cannot share {} from rank 0: {}",
                                                     where(), key, first_line_of(e)));
    }
}

void World::barrier() {
    if (!distributed()) return;
    // A one-element all-reduce rather than ProcessGroup::barrier, which Gloo runs on a tensor
    // of its own device choice; this also checks the ranks agree on the order of collectives.
    torch::Tensor one = torch::ones({1});
    all_reduce_sum(one);
    if (one.item<float>() != static_cast<float>(size_))
        throw Error(ErrorKind::Internal,
                    fmt::format("{}: barrier counted {} ranks", where(), one.item<float>()));
}

void broadcast_module(World& world, torch::nn::Module& module, bool parameters, bool buffers) {
    if (!world.distributed()) return;
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> tensors;
    if (parameters)
        for (auto& p : module.named_parameters()) tensors.push_back(p.value());
    if (buffers)
        for (auto& b : module.named_buffers()) tensors.push_back(b.value());
    // Grouped by dtype (num_batches_tracked is int64): one flat tensor each.
    std::map<at::ScalarType, std::vector<torch::Tensor>> by_type;
    for (const torch::Tensor& t : tensors) by_type[t.scalar_type()].push_back(t);
    for (auto& [type, group] : by_type) {
        std::vector<torch::Tensor> flat_parts;
        for (const torch::Tensor& t : group) flat_parts.push_back(t.detach().reshape(-1));
        torch::Tensor flat = torch::cat(flat_parts);
        world.broadcast(flat);
        std::int64_t offset = 0;
        for (torch::Tensor& t : group) {
            t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
            offset += t.numel();
        }
    }
}

}  // namespace boneage::detail
