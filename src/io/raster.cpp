// PNG, JPEG, BMP and TIFF through OpenCV, after the header has been checked: limits first,
// then that the file is whole, and only then the decode.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "io/readers.hpp"

namespace boneage::io {

namespace {

// The spread of the opponent axes R - G and (R + G) / 2 - B over a sample of pixels, on the
// 8-bit scale: colour that varies across the image, as in photographs and documents.
double colourfulness(const cv::Mat& image) {
    if (image.channels() < 3) return 0.0;
    cv::Mat bgr;
    if (image.channels() == 4)
        cv::cvtColor(image, bgr, cv::COLOR_BGRA2BGR);
    else
        bgr = image;
    const double scale = bgr.depth() == CV_16U ? 1.0 / 257.0 : bgr.depth() == CV_8U ? 1.0 : 255.0;
    const int step = std::max(1, static_cast<int>(std::sqrt(bgr.total() / 65536.0)));
    cv::Mat small;
    cv::resize(bgr, small, cv::Size(std::max(1, bgr.cols / step), std::max(1, bgr.rows / step)), 0, 0,
               cv::INTER_NEAREST);
    small.convertTo(small, CV_32FC3, scale);
    std::vector<cv::Mat> c;
    cv::split(small, c);
    cv::Scalar m_rg, s_rg, m_yb, s_yb;
    cv::meanStdDev(c[2] - c[1], m_rg, s_rg);
    cv::meanStdDev(0.5 * (c[2] + c[1]) - c[0], m_yb, s_yb);
    return std::hypot(s_rg[0], s_yb[0]);
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
    Radiograph r;
    // JPEG and PNG through their libraries directly, which report damage to us rather than
    // print it; BMP and TIFF through OpenCV, which prints nothing for them.
    if (format == Format::Jpeg || format == Format::Png) {
        std::string error;
        decoded = format == Format::Jpeg ? decode_jpeg(source, r.info.warnings, error)
                                         : decode_png(source, r.info.warnings, error);
        if (decoded.empty())
            throw Error(decode_failure(format, header), file,
                        std::string(format_name(format)) + " data could not be decoded" +
                            (error.empty() ? "" : ": " + error));
    } else {
        try {
            decoded = cv::imdecode(encoded, cv::IMREAD_UNCHANGED);
        } catch (const cv::Exception& e) {
            throw Error(decode_failure(format, header), file,
                        std::string(format_name(format)) + " data could not be decoded: " + e.msg);
        }
    }
    if (decoded.empty())
        throw Error(decode_failure(format, header), file,
                    std::string(format_name(format)) + " data could not be decoded");

    r.info.colourfulness = colourfulness(decoded);
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
