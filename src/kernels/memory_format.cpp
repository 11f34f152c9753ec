#include <boneage/memory_format.hpp>

namespace boneage {

torch::Tensor channels_last(const torch::Tensor& t) {
    return torch::empty(t.sizes(), t.options().memory_format(torch::MemoryFormat::ChannelsLast))
        .copy_(t);
}

void use_channels_last(torch::nn::Module& module) {
    torch::NoGradGuard no_grad;
    for (auto& p : module.parameters())
        if (p.dim() == 4) p.set_data(channels_last(p));
}

}  // namespace boneage
