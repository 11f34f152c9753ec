// Checkpoint files: a LibTorch archive with the model, Adam, the best weights, the torch
// generator state and a JSON string with everything else.
#include "train/checkpoint.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <mutex>
#include <sstream>
#include <system_error>

namespace boneage::detail {

namespace {
constexpr int kCheckpointVersion = 1;

std::vector<torch::Tensor> all_tensors(torch::nn::Module& net) {
    std::vector<torch::Tensor> out;
    for (auto& p : net.named_parameters()) out.push_back(p.value());
    for (auto& b : net.named_buffers()) out.push_back(b.value());
    return out;
}

nlohmann::json to_json_state(const CheckpointState& s) {
    return {{"version", kCheckpointVersion},
            {"epoch", s.epoch},
            {"options", s.options},
            {"config", s.config},
            {"early_stopping", s.early_stopping},
            {"history", s.history},
            {"step_ms", s.step_ms},
            {"order_rng", s.order_rng},
            {"stopped_early", s.stopped_early}};
}

CheckpointState from_json_state(const nlohmann::json& j) {
    CheckpointState s;
    s.epoch = j.at("epoch").get<int>();
    s.options = j.at("options").get<TrainOptions>();
    s.config = j.at("config").get<ModelConfig>();
    s.early_stopping = j.at("early_stopping");
    s.history = j.at("history").get<std::vector<EpochStats>>();
    s.step_ms = j.at("step_ms").get<std::vector<double>>();
    s.order_rng = j.at("order_rng").get<std::string>();
    s.stopped_early = j.at("stopped_early").get<bool>();
    return s;
}

torch::serialize::InputArchive open_archive(const std::filesystem::path& file) {
    if (!std::filesystem::exists(file))
        throw Error(ErrorKind::NotFound, file, "no checkpoint here");
    torch::serialize::InputArchive archive;
    try {
        archive.load_from(file.string());
    } catch (const c10::Error& e) {
        throw Error(ErrorKind::BadData, file,
                    "not a readable checkpoint (" + std::string(e.what_without_backtrace()) + ")");
    }
    return archive;
}
}  // namespace

WeightSnapshot snapshot(torch::nn::Module& net) {
    torch::NoGradGuard no_grad;
    WeightSnapshot s;
    for (const torch::Tensor& t : all_tensors(net)) s.tensors.push_back(t.detach().clone());
    return s;
}

void restore(torch::nn::Module& net, const WeightSnapshot& s) {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> dst = all_tensors(net);
    if (dst.size() != s.tensors.size())
        throw Error(ErrorKind::Internal,
                    fmt::format("weight snapshot holds {} tensors, the model {}", s.tensors.size(),
                                dst.size()));
    for (std::size_t i = 0; i < dst.size(); ++i) {
        if (dst[i].sizes() != s.tensors[i].sizes())
            throw Error(ErrorKind::Internal,
                        fmt::format("weight snapshot tensor {} has another shape", i));
        dst[i].copy_(s.tensors[i]);
    }
}

void save_checkpoint(const std::filesystem::path& file, const CheckpointState& state,
                     BoneAgeNetImpl& net, torch::optim::Optimizer& optimizer,
                     const WeightSnapshot& best) {
    torch::serialize::OutputArchive archive;
    archive.write("state", c10::IValue(to_json_state(state).dump()));

    torch::serialize::OutputArchive model;
    net.save(model);
    archive.write("model", model);

    torch::serialize::OutputArchive adam;
    optimizer.save(adam);
    archive.write("optimizer", adam);

    torch::serialize::OutputArchive best_archive;
    for (std::size_t i = 0; i < best.tensors.size(); ++i)
        best_archive.write("t" + std::to_string(i), best.tensors[i], /*is_buffer=*/true);
    archive.write("best", best_archive);
    archive.write("best_count", c10::IValue(static_cast<std::int64_t>(best.tensors.size())));

    archive.write("torch_rng", at::detail::getDefaultCPUGenerator().get_state(),
                  /*is_buffer=*/true);

    // Serialised in memory, then written whole: LibTorch's file writer aborts the process
    // when the disk fills under it, and a checkpoint must fail as an error that names it.
    std::ostringstream bytes;
    archive.save_to(bytes);
    remove_stale_temps(file);  // a run killed while writing its checkpoint left one behind
    write_file_atomically(file, bytes.str());
}

CheckpointState read_checkpoint_state(const std::filesystem::path& file) {
    torch::serialize::InputArchive archive = open_archive(file);
    try {
        c10::IValue state;
        archive.read("state", state);
        const nlohmann::json j = nlohmann::json::parse(state.toStringRef());
        if (j.value("version", 0) != kCheckpointVersion)
            throw Error(ErrorKind::BadData, file,
                        fmt::format("checkpoint version {} is not {}", j.value("version", 0),
                                    kCheckpointVersion));
        return from_json_state(j);
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {
        throw Error(ErrorKind::BadData, file, std::string("damaged checkpoint state: ") + e.what());
    }
}

void load_checkpoint_tensors(const std::filesystem::path& file, BoneAgeNetImpl& net,
                             torch::optim::Optimizer& optimizer, WeightSnapshot& best) {
    torch::serialize::InputArchive archive = open_archive(file);
    try {
        torch::serialize::InputArchive model, adam, best_archive;
        archive.read("model", model);
        net.load(model);
        archive.read("optimizer", adam);
        optimizer.load(adam);

        archive.read("best", best_archive);
        c10::IValue count;
        archive.read("best_count", count);
        best = {};
        if (count.toInt() > 0) best = snapshot(net);  // right count; filled from the archive
        for (std::size_t i = 0; i < best.tensors.size(); ++i)
            best_archive.read("t" + std::to_string(i), best.tensors[i], /*is_buffer=*/true);

        torch::Tensor rng;
        archive.read("torch_rng", rng, /*is_buffer=*/true);
        at::Generator generator =
            at::detail::getDefaultCPUGenerator();  // a handle to the global one
        std::lock_guard<std::mutex> lock(generator.mutex());
        generator.set_state(rng);
    } catch (const c10::Error& e) {
        throw Error(ErrorKind::BadData, file,
                    "damaged checkpoint (" + std::string(e.what_without_backtrace()) + ")");
    }
}

}  // namespace boneage::detail
