#include <boneage/memory_format.hpp>

namespace boneage {

torch::Tensor channels_last(const torch::Tensor& t) {
    return torch::empty(t.sizes(), t.options().memory_format(torch::MemoryFormat::ChannelsLast))
        .copy_(t);
}

}  // namespace boneage
