// Where the network looked: Grad-CAM (Selvaraju et al., arXiv:1610.02391) on the last
// convolutional stage, through the model's LibTorch module with autograd (the inference fast
// path keeps no gradients), and occlusion (Zeiler & Fergus, arXiv:1311.2901) for nets without
// such a stage.
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <boneage/error.hpp>
#include <boneage/heatmap.hpp>
#include <cmath>
#include <opencv2/imgproc.hpp>

namespace boneage {

namespace {

// Puts a net in evaluation mode (batch-norm statistics, no dropout) for a scope, and back in
// training mode after when it was: a heatmap taken during training must not change it.
class EvalScope {
public:
    explicit EvalScope(BoneAgeNetImpl& net) : net_(net), training_(net.is_training()) {
        net_.eval();
    }
    ~EvalScope() {
        if (training_) net_.train();
    }
    EvalScope(const EvalScope&) = delete;
    EvalScope& operator=(const EvalScope&) = delete;

private:
    BoneAgeNetImpl& net_;
    bool training_;
};

void check_image(const LoadedModel& model, const cv::Mat& image) {
    const int size = model.meta.preprocess.output_size;
    if (image.empty() || image.type() != CV_8UC1 || image.rows != size || image.cols != size)
        throw UsageError(fmt::format(
            "a heatmap needs the model's preprocessed image, {0}x{0} 8-bit grey; got {1}x{2} of "
            "type {3}",
            size, image.cols, image.rows, image.type()));
}

// 1 x 1 x S x S in [0, 1], S the image's side.
torch::Tensor image_tensor(const cv::Mat& image) {
    cv::Mat continuous = image.isContinuous() ? image : image.clone();
    return images_to_tensor({continuous.ptr<std::uint8_t>()}, continuous.cols);
}

// To the net's input side with the resize training applies (resize_batch in model.hpp).
torch::Tensor to_input_size(const torch::Tensor& images, int size) {
    if (images.size(-1) == size) return images;
    namespace F = torch::nn::functional;
    return F::interpolate(images, F::InterpolateFuncOptions()
                                      .size(std::vector<std::int64_t>{size, size})
                                      .mode(torch::kBilinear)
                                      .align_corners(false)
                                      .antialias(images.size(-1) > size));
}

// The sexes to read the image as: the one given; both (and their mean taken) when the model
// uses sex and none was given, as the predictor does; else one placeholder the net ignores.
torch::Tensor sex_rows(const LoadedModel& model, std::optional<bool> male) {
    if (male) return torch::tensor({*male ? 1.0f : 0.0f});
    if (model.net->config().use_sex) return torch::tensor({1.0f, 0.0f});
    return torch::tensor({0.0f});
}

// A map at the feature resolution (1 x 1 x h x w) to the image's side.
torch::Tensor upsample(const torch::Tensor& map, int size) {
    namespace F = torch::nn::functional;
    return F::interpolate(map, F::InterpolateFuncOptions()
                                   .size(std::vector<std::int64_t>{size, size})
                                   .mode(torch::kBilinear)
                                   .align_corners(false));
}

// One trunk's signed Grad-CAM, 1 x 1 x h x w: the last stage's activations A_k, less those
// of an all-black image, weighted by the spatial mean of d(months)/dA_k and summed over
// channels. Adds the months to `months`.
//
// Grad-CAM proper weighs A_k itself, measuring each place against zero activations. After
// batch norm, black is not zero: the letterbox's bars give the same sizeable activations
// everywhere, so a map of |sum| paints the bars nearly as brightly as the hand (13-33 % of
// the heat on the bundled model's synthetic hands, against 4-12 % taken against black).
// Against the black image, the padding's own value, a place is hot only for what is there.
torch::Tensor signed_cam(BoneAgeNetImpl& net, const torch::Tensor& x, const torch::Tensor& sex,
                         double& months) {
    torch::Tensor a, black;
    {
        // Only the head's gradient is needed: no graph through the trunk.
        torch::NoGradGuard no_grad;
        torch::Tensor both = net.features(torch::cat({x, torch::zeros_like(x)}));
        a = both.narrow(0, 0, 1);
        black = both.narrow(0, 1, 1);
    }
    a = a.detach().requires_grad_(true);
    const std::int64_t rows = sex.size(0);
    torch::Tensor y = net.head(a.expand({rows, -1, -1, -1}), sex).mean();
    months += y.item<double>();
    torch::Tensor grad = torch::autograd::grad({y}, {a})[0];
    torch::Tensor weights = grad.mean({2, 3}, /*keepdim=*/true);
    return (weights * (a.detach() - black)).sum(1, /*keepdim=*/true);
}

// The map scaled so that its largest value is 1; an all-zero map stays zero.
cv::Mat normalised(const torch::Tensor& map) {
    torch::Tensor m = map.reshape({map.size(-2), map.size(-1)}).to(torch::kFloat32).contiguous();
    const float top = m.max().item<float>();
    if (top > 0.0f && std::isfinite(top)) m = m / top;
    return cv::Mat(int(m.size(0)), int(m.size(1)), CV_32FC1, m.data_ptr<float>()).clone();
}

Saliency grad_cam(const LoadedModel& model, const torch::Tensor& image, std::optional<bool> male) {
    const std::vector<BoneAgeNet> members = ensemble_members(model.net);
    const torch::Tensor x = to_input_size(image, model.net->config().input_size);
    const torch::Tensor sex = sex_rows(model, male);
    const int side = int(image.size(-1));
    torch::AutoGradMode autograd(true);  // also when the caller runs under NoGradGuard
    Saliency out;
    out.method = "grad-cam";
    // An ensemble's months are the members' mean, so its map is the mean of theirs, taken
    // signed and at the image's side (members may see at different resolutions).
    torch::Tensor sum = torch::zeros({1, 1, side, side});
    for (const BoneAgeNet& member : members) {
        if (!member->has_features())
            throw UsageError(fmt::format("Grad-CAM needs a convolutional trunk; a {} net has none",
                                         member->config().arch));
        EvalScope eval(*member);
        sum += upsample(signed_cam(*member, x, sex, out.months), side);
    }
    out.months /= double(members.size());
    // Grad-CAM for classification keeps ReLU(map): the evidence for the class. For a
    // regression the sign says only in which direction a region moves the months; open growth
    // plates that pull the estimate down are as much what the network looked at as fused ones
    // that push it up, and ReLU would hide the first whenever the hand looks young. So the
    // magnitude is kept.
    out.map = normalised(sum.abs());
    return out;
}

// The months for a batch of images (N x 1 x S x S), the mean over the sex rows.
torch::Tensor months_of(const LoadedModel& model, const torch::Tensor& images,
                        const torch::Tensor& sex) {
    const torch::Tensor x = to_input_size(images, model.net->config().input_size);
    torch::Tensor sum = torch::zeros({images.size(0)});
    for (std::int64_t r = 0; r < sex.size(0); ++r)
        sum += model.net->forward(x, sex[r].expand({images.size(0)})).reshape({-1});
    return sum / double(sex.size(0));
}

// Top-left corners of `patch`-sided windows every `stride` pixels, the last at the edge so
// that every pixel is covered.
std::vector<int> window_starts(int side, int patch, int stride) {
    std::vector<int> starts;
    for (int s = 0; s + patch < side; s += stride) starts.push_back(s);
    starts.push_back(side - patch);
    return starts;
}

std::vector<cv::Rect> occlusion_windows(int side, const SaliencyOptions& options) {
    const int wanted = options.occlusion_patch > 0 ? options.occlusion_patch : side / 6;
    const int patch = std::clamp(wanted, 1, side);
    const int stride =
        options.occlusion_stride > 0 ? options.occlusion_stride : std::max(1, patch / 2);
    std::vector<cv::Rect> windows;
    for (int y : window_starts(side, patch, stride))
        for (int x : window_starts(side, patch, stride)) windows.emplace_back(x, y, patch, patch);
    return windows;
}

// Copies of the image (1 x 1 x S x S), each with one of `windows` blacked out. Black is the
// letterbox's padding: covering the padding changes nothing, and covering the hand takes its
// tissue away rather than adding a grey the network never saw.
torch::Tensor occluded_copies(const torch::Tensor& image, const std::vector<cv::Rect>& windows) {
    torch::Tensor out = image.repeat({std::int64_t(windows.size()), 1, 1, 1});
    for (std::size_t k = 0; k < windows.size(); ++k) {
        const cv::Rect& w = windows[k];
        out[std::int64_t(k)].narrow(1, w.y, w.height).narrow(2, w.x, w.width).zero_();
    }
    return out;
}

// Each pixel: the mean |change in months| over the windows that cover it, scaled to peak 1.
Saliency occlusion(const LoadedModel& model, const torch::Tensor& image, std::optional<bool> male,
                   const SaliencyOptions& options) {
    const int side = int(image.size(-1));
    const std::vector<cv::Rect> windows = occlusion_windows(side, options);
    const std::size_t batch = std::size_t(std::max(1, options.occlusion_batch));
    const torch::Tensor sex = sex_rows(model, male);
    torch::NoGradGuard no_grad;
    EvalScope eval(*model.net);
    Saliency out;
    out.method = "occlusion";
    out.months = months_of(model, image, sex).item<double>();
    cv::Mat change = cv::Mat::zeros(side, side, CV_32FC1);
    cv::Mat covered = cv::Mat::zeros(side, side, CV_32FC1);
    for (std::size_t start = 0; start < windows.size(); start += batch) {
        const std::vector<cv::Rect> chunk(
            windows.begin() + start, windows.begin() + std::min(windows.size(), start + batch));
        const torch::Tensor months =
            months_of(model, occluded_copies(image, chunk), sex).to(torch::kFloat64).contiguous();
        for (std::size_t k = 0; k < chunk.size(); ++k) {
            cv::Mat changed = change(chunk[k]), counted = covered(chunk[k]);
            changed += std::abs(months.data_ptr<double>()[k] - out.months);
            counted += 1.0;
        }
    }
    cv::Mat mean = change / cv::max(covered, 1.0);
    double top = 0.0;
    cv::minMaxLoc(mean, nullptr, &top);
    out.map = top > 0.0 ? cv::Mat(mean / top) : mean;
    return out;
}

}  // namespace

Saliency saliency(const LoadedModel& model, const cv::Mat& image, std::optional<bool> male,
                  const SaliencyOptions& options) {
    if (!model.net) throw UsageError("a heatmap needs a model; none was given");
    check_image(model, image);
    const torch::Tensor x = image_tensor(image);
    SaliencyMethod method = options.method;
    if (method == SaliencyMethod::Auto) {
        method = SaliencyMethod::GradCam;
        for (const BoneAgeNet& m : ensemble_members(model.net))
            if (!m->has_features()) method = SaliencyMethod::Occlusion;
    }
    return method == SaliencyMethod::GradCam ? grad_cam(model, x, male)
                                             : occlusion(model, x, male, options);
}

}  // namespace boneage
