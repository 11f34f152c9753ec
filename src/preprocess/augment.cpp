// Augmentation on the uint8 images: random draws for training, fixed views for test time.
#include <boneage/augment.hpp>

#include <boneage/splitmix.hpp>
#include <cmath>
#include <opencv2/imgproc.hpp>

namespace boneage {

namespace {
// A tiny stream of uniforms in [-1, 1) from one 64-bit state.
class Uniforms {
public:
    explicit Uniforms(std::uint64_t state) : state_(state) {}
    double next() {
        state_ = splitmix64(state_);
        return static_cast<double>(state_ >> 11) * 0x1.0p-52 - 1.0;
    }

private:
    std::uint64_t state_;
};
}  // namespace

Augmentation draw_augmentation(std::uint64_t seed, int epoch, std::uint64_t index,
                               const AugmentSettings& s) {
    Uniforms u(
        splitmix64(splitmix64(seed) ^ splitmix64(static_cast<std::uint64_t>(epoch) << 32 ^ index)));
    Augmentation a;
    a.rotation_deg = s.rotation_deg * u.next();
    a.shift_x = s.shift * u.next();
    a.shift_y = s.shift * u.next();
    a.scale = 1.0 + s.scale * u.next();
    a.contrast = 1.0 + s.contrast * u.next();
    a.brightness = s.brightness * u.next();
    return a;
}

void augment_image(const std::uint8_t* src, int size, const Augmentation& a, std::uint8_t* dst) {
    const cv::Mat in(size, size, CV_8UC1, const_cast<std::uint8_t*>(src));
    cv::Mat out(size, size, CV_8UC1, dst);
    const double centre = (size - 1) / 2.0;
    cv::Mat m = cv::getRotationMatrix2D(cv::Point2f(centre, centre), a.rotation_deg, a.scale);
    m.at<double>(0, 2) += a.shift_x * size;
    m.at<double>(1, 2) += a.shift_y * size;
    cv::Mat moved;
    cv::warpAffine(in, moved, m, in.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar(0));
    // out = contrast * (in - 128) + 128 + 255 * brightness, saturated to 0..255.
    moved.convertTo(out, CV_8U, a.contrast, 128.0 * (1.0 - a.contrast) + 255.0 * a.brightness);
}

}  // namespace boneage
