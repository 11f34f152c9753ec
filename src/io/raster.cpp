// PNG, JPEG, BMP and TIFF through OpenCV, after the header has been checked: limits first,
// then that the file is whole, and only then the decode.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "io/readers.hpp"

namespace boneage::io {

namespace {

// Any depth and channel count → CV_8UC1 or CV_16UC1; colour becomes luminance, alpha is
// dropped, and depths OpenCV cannot turn into grey directly are stretched to 16 bits.
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

// Why OpenCV could refuse a file whose structure looked whole.
ErrorKind decode_failure(Format format, const RasterHeader& header) {
    if (format == Format::Tiff) return ErrorKind::Unsupported;  // compression or layout
    if (format == Format::Jpeg && header.bits != 8) return ErrorKind::Unsupported;
    return ErrorKind::Truncated;  // corrupt data inside a complete file
}

}  // namespace

Radiograph decode_raster(Format format, const std::vector<std::uint8_t>& bytes,
                         const std::filesystem::path& file, const ReadLimits& limits) {
    const RasterHeader header = read_raster_header(format, bytes, file);
    check_limits(header.width, header.height, limits, file);
    if (!header.incomplete.empty()) throw Error(ErrorKind::Truncated, file, header.incomplete);

    // OpenCV inverts WhiteIsZero TIFFs at some depths and not at others; relabel the copy
    // BlackIsZero and invert after decoding, so every depth is handled the same way.
    const bool white_is_zero = header.photometric == "MONOCHROME1" && header.photometric_at != 0;
    std::vector<std::uint8_t> relabelled;
    if (white_is_zero) {
        relabelled = bytes;
        relabelled[header.photometric_at] = header.big_endian ? 0 : 1;
        relabelled[header.photometric_at + 1] = header.big_endian ? 1 : 0;
    }
    const std::vector<std::uint8_t>& source = white_is_zero ? relabelled : bytes;
    const cv::Mat encoded(1, static_cast<int>(source.size()), CV_8UC1,
                          const_cast<std::uint8_t*>(source.data()));
    cv::Mat decoded;
    try {
        decoded = cv::imdecode(encoded, cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
        throw Error(decode_failure(format, header), file,
                    std::string(format_name(format)) + " data could not be decoded: " + e.msg);
    }
    if (decoded.empty())
        throw Error(decode_failure(format, header), file,
                    std::string(format_name(format)) + " data could not be decoded");

    Radiograph r;
    r.pixels = to_grey(decoded);
    if (white_is_zero) cv::bitwise_not(r.pixels, r.pixels);
    r.info.inverted = white_is_zero;
    r.info.format = format_name(format);
    r.info.width = r.pixels.cols;
    r.info.height = r.pixels.rows;
    r.info.bits_stored = r.pixels.depth() == CV_16U ? 16 : 8;
    r.info.channels = header.channels;
    r.info.photometric = header.photometric;
    return r;
}

}  // namespace boneage::io
