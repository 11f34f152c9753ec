// Errors of a model on rows of a prepared cache, as training validates each epoch.
#include <algorithm>
#include <boneage/train.hpp>
#include <cmath>

namespace boneage {

ValidationMetrics measure(BoneAgeNetImpl& net, const PreparedCache& cache,
                          const std::vector<std::size_t>& rows_in, int batch_size) {
    std::vector<std::size_t> rows = rows_in;
    if (rows.empty())
        for (std::size_t i = 0; i < cache.size(); ++i) rows.push_back(i);
    const std::size_t bs = static_cast<std::size_t>(std::max(1, batch_size));
    const int size = cache.image_size();
    const int input_size = net.config().input_size;

    net.eval();
    torch::NoGradGuard no_grad;
    // Where the net is (a CUDA device in a GPU run); the figures are summed on the CPU.
    const auto params = net.parameters();
    const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params[0].device();
    double abs_sum = 0.0, sq_sum = 0.0, msle_sum = 0.0;
    for (std::size_t start = 0; start < rows.size(); start += bs) {
        const std::size_t end = std::min(rows.size(), start + bs);
        std::vector<const std::uint8_t*> images;
        std::vector<float> ages, sex;
        for (std::size_t i = start; i < end; ++i) {
            images.push_back(cache.image(rows[i]));
            ages.push_back(static_cast<float>(cache.age_months(rows[i])));
            sex.push_back(cache.male(rows[i]) ? 1.0f : 0.0f);
        }
        const torch::Tensor x =
            resize_batch(images_to_tensor(images, size), input_size).to(device);
        const torch::Tensor pred = net.forward(x, torch::tensor(sex).to(device))
                                       .reshape({-1})
                                       .to(torch::kCPU, torch::kFloat64);
        const torch::Tensor target = torch::tensor(ages).to(torch::kFloat64);
        const torch::Tensor diff = pred - target;
        abs_sum += diff.abs().sum().item<double>();
        sq_sum += diff.pow(2).sum().item<double>();
        // msle_loss is a mean; weight it by the batch so the total is the mean over images.
        msle_sum += msle_loss(pred, target).item<double>() * static_cast<double>(end - start);
    }
    ValidationMetrics m;
    m.n = rows.size();
    if (m.n == 0) return m;
    const double n = static_cast<double>(m.n);
    m.mae = abs_sum / n;
    m.rmse = std::sqrt(sq_sum / n);
    m.msle = msle_sum / n;
    return m;
}

}  // namespace boneage
