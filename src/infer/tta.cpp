// Test-time views: small fixed changes of a preprocessed image whose predictions are averaged.
// A network trained with augmentation answers each view a little differently; the mean of
// several views cancels part of that scatter.
#include <boneage/predict.hpp>

#include <boneage/error.hpp>

#include <fmt/format.h>

namespace boneage {

std::vector<Augmentation> tta_views(int count) {
    if (count < 1 || count > kMaxViews)
        throw Error(ErrorKind::Usage,
                    fmt::format("test-time views must be 1 to {}, got {}", kMaxViews, count));
    // Pairs of opposite changes, about half of what the bundled recipe draws at most
    // (rotation 20 degrees, zoom 15 %, shift 8 %): views the network saw often in training.
    auto view = [](double rotation, double scale, double shift) {
        Augmentation a;
        a.rotation_deg = rotation;
        a.scale = scale;
        a.shift_x = a.shift_y = shift;
        return a;
    };
    const std::vector<Augmentation> all = {
        view(0.0, 1.0, 0.0),
        view(8.0, 1.0, 0.0),   view(-8.0, 1.0, 0.0),
        view(0.0, 1.06, 0.0),  view(0.0, 0.94, 0.0),
        view(0.0, 1.0, 0.03),  view(0.0, 1.0, -0.03),
    };
    return std::vector<Augmentation>(all.begin(), all.begin() + count);
}

}  // namespace boneage
