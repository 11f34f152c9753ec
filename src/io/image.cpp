// read_radiograph: typed refusals for files that are missing, empty or not images, then the
// decoder chosen by the first bytes of the file. Also the small conversions around it.
#include <algorithm>
#include <climits>
#include <fstream>
#include <new>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fmt/format.h>

#include <boneage/durable_file.hpp>

#include "io/readers.hpp"

namespace boneage {

namespace fs = std::filesystem;

namespace io {

void check_limits(std::int64_t width, std::int64_t height, const ReadLimits& limits,
                  const fs::path& file) {
    const std::string size = std::to_string(width) + " x " + std::to_string(height);
    if (width > limits.max_side || height > limits.max_side)
        throw Error(ErrorKind::TooLarge, file,
                    "image is " + size + ", longer than the limit of " +
                        std::to_string(limits.max_side) + " pixels a side");
    // Both sides are at most max_side (an int) here, so the product cannot overflow.
    if (width * height > limits.max_pixels)
        throw Error(ErrorKind::TooLarge, file,
                    "image is " + size + ", more than the limit of " +
                        std::to_string(limits.max_pixels) + " pixels");
    if (std::min(width, height) < limits.min_side)
        throw Error(ErrorKind::Unsupported, file,
                    fmt::format("image is {} pixels, too small for a radiograph: each side must "
                                "be at least {}",
                                size, limits.min_side));
    const double aspect = static_cast<double>(std::max(width, height)) /
                          static_cast<double>(std::max<std::int64_t>(1, std::min(width, height)));
    if (aspect > limits.max_aspect)
        throw Error(ErrorKind::Unsupported, file,
                    fmt::format("image is {} pixels, its longer side {:.3g} times its shorter: "
                                "a radiograph's is at most {:g} times",
                                size, aspect, limits.max_aspect));
}

}  // namespace io

namespace {

std::vector<std::uint8_t> read_bytes(const fs::path& file, std::uintmax_t count) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error(ErrorKind::NotFound, file, "cannot be opened");
    std::vector<std::uint8_t> bytes(count);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(count));
    bytes.resize(static_cast<std::size_t>(in.gcount()));
    return bytes;
}

// No encoding of an image within the limits needs more than 8 bytes a pixel (16-bit RGBA)
// plus headers; a bigger file is refused before it is read into memory.
void check_file_size(std::uintmax_t size, const ReadLimits& limits, const fs::path& file) {
    const double allowed = std::min(static_cast<double>(limits.max_pixels) * 8.0 + (64 << 20),
                                    static_cast<double>(INT_MAX));
    if (static_cast<double>(size) > allowed)
        throw Error(ErrorKind::TooLarge, file,
                    "file is " + std::to_string(size) +
                        " bytes, too large for an image "
                        "within the limits");
}

Radiograph read_any(const fs::path& file, const ReadLimits& limits) {
    std::error_code ec;
    const fs::file_status status = fs::status(file, ec);
    if (ec || !fs::exists(status)) throw Error(ErrorKind::NotFound, file, "no such file");
    if (fs::is_directory(status)) throw Error(ErrorKind::NotFound, file, "is a folder, not a file");
    const std::uintmax_t size = fs::file_size(file, ec);
    if (ec) throw Error(ErrorKind::NotFound, file, "cannot be read: " + ec.message());
    if (size == 0) throw Error(ErrorKind::Empty, file, "file is empty");

    const std::vector<std::uint8_t> head = read_bytes(file, std::min<std::uintmax_t>(size, 132));
    const io::Format format = io::sniff_format(head.data(), head.size());
    if (format == io::Format::Unknown)
        throw Error(ErrorKind::NotAnImage, file, "not a PNG, JPEG, BMP, TIFF or DICOM file");
    if (format == io::Format::Dicom) return io::read_dicom(file, limits);

    check_file_size(size, limits, file);
    const std::vector<std::uint8_t> bytes = read_bytes(file, size);
    return io::decode_raster(format, bytes, file, limits);
}

}  // namespace

Radiograph read_radiograph(const fs::path& file, const ReadLimits& limits) {
    // The decoders are third-party code; whatever they throw leaves here as a boneage::Error.
    try {
        return read_any(file, limits);
    } catch (const Error&) {
        throw;
    } catch (const cv::Exception& e) {
        throw Error(ErrorKind::Truncated, file, "image data could not be decoded: " + e.msg);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorKind::TooLarge, file, "not enough memory to decode the image");
    } catch (const std::exception& e) {
        throw Error(ErrorKind::Internal, file, std::string("unexpected failure: ") + e.what());
    }
}

cv::Mat to_8bit(const cv::Mat& grey) {
    if (grey.empty()) return {};
    if (grey.channels() != 1 || (grey.depth() != CV_8U && grey.depth() != CV_16U))
        throw Error(ErrorKind::Usage, "to_8bit expects one 8- or 16-bit grey channel");
    if (grey.depth() == CV_8U) return grey.clone();
    double low = 0.0, high = 0.0;
    cv::minMaxLoc(grey, &low, &high);
    cv::Mat out;
    if (high <= low) {  // no range to stretch: keep the absolute level
        grey.convertTo(out, CV_8U, 255.0 / 65535.0);
    } else {
        const double scale = 255.0 / (high - low);
        grey.convertTo(out, CV_8U, scale, -low * scale);
    }
    return out;
}

cv::Mat to_grey(cv::Mat image) {
    if (image.depth() != CV_8U && image.depth() != CV_16U && image.depth() != CV_32F)
        image.convertTo(image, CV_32F);
    cv::Mat grey;
    switch (image.channels()) {
        case 1:
            grey = image;
            break;
        case 3:
            cv::cvtColor(image, grey, cv::COLOR_BGR2GRAY);
            break;
        case 4:
            cv::cvtColor(image, grey, cv::COLOR_BGRA2GRAY);
            break;
        default:
            cv::extractChannel(image, grey, 0);
            break;
    }
    if (grey.depth() == CV_32F) {
        cv::patchNaNs(grey, 0.0);
        cv::normalize(grey, grey, 0, 65535, cv::NORM_MINMAX, CV_16U);
    }
    return grey;
}

cv::Mat to_grey8(const cv::Mat& image, std::string_view who) {
    if (image.empty()) throw Error(ErrorKind::Usage, fmt::format("{}: empty image", who));
    cv::Mat grey = to_grey(image);
    return grey.depth() == CV_8U ? grey : to_8bit(grey);
}

void write_image(const fs::path& file, const cv::Mat& image) {
    if (image.empty()) throw Error(ErrorKind::Usage, file, "nothing to write: the image is empty");
    // Encoded in memory, then written whole or not at all: a full disk never leaves a cut
    // image under the final name.
    std::vector<unsigned char> bytes;
    try {
        if (!cv::imencode(file.extension().string(), image, bytes))
            throw Error(ErrorKind::Unsupported, file, "OpenCV cannot encode this image");
    } catch (const cv::Exception& e) {
        throw Error(ErrorKind::Unsupported, file, "OpenCV cannot write this image: " + e.msg);
    }
    write_file_atomically(
        file, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace boneage
