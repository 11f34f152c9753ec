// The network's input batch: the one place where images become tensors, and the one resize
// between a cache's image size and a model's input size (training and prediction share both).
#include <boneage/model.hpp>

#include <array>

namespace boneage {

torch::Tensor images_to_tensor(const std::vector<const std::uint8_t*>& images, int size) {
    TORCH_CHECK(size > 0, "image size must be positive, got ", size);
    // A table of v / 255 gives the same floats as a division, at the cost of a load.
    static const std::array<float, 256> scale = [] {
        std::array<float, 256> t{};
        for (int v = 0; v < 256; ++v) t[v] = static_cast<float>(v) / 255.0f;
        return t;
    }();
    const auto count = static_cast<std::int64_t>(images.size());
    const std::size_t pixels = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
    torch::Tensor out = torch::empty({count, 1, size, size}, torch::kFloat32);
    float* dst = out.data_ptr<float>();
    for (const std::uint8_t* src : images) {
        TORCH_CHECK(src != nullptr, "images_to_tensor: null image");
        for (std::size_t k = 0; k < pixels; ++k) dst[k] = scale[src[k]];
        dst += pixels;
    }
    return out;
}

torch::Tensor resize_batch(const torch::Tensor& images, int size) {
    if (images.size(-1) == size && images.size(-2) == size) return images;
    namespace F = torch::nn::functional;
    const bool shrinking = images.size(-1) > size;
    return F::interpolate(images, F::InterpolateFuncOptions()
                                      .size(std::vector<std::int64_t>{size, size})
                                      .mode(torch::kBilinear)
                                      .align_corners(false)
                                      .antialias(shrinking));
}

torch::Tensor normalise_input(const ModelConfig& config, const torch::Tensor& images) {
    if (config.input_mean == 0.0 && config.input_std == 1.0) return images;
    return (images - config.input_mean) / config.input_std;
}

}  // namespace boneage
