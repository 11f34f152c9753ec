// JPEG through libjpeg itself rather than OpenCV: OpenCV leaves libjpeg's warnings ("Corrupt
// JPEG data: premature end of data segment") on stderr and returns the half-grey image as if it
// were whole. Here an error manager of our own turns libjpeg's errors into boneage::Error and
// collects its warnings, so the result says the film was damaged and nothing is printed.
#include <cstdio>  // jpeglib.h needs FILE and size_t declared first

#include <jerror.h>
#include <jpeglib.h>

#include <csetjmp>
#include <cstring>
#include <fmt/format.h>

#include "io/readers.hpp"

namespace boneage::io {

namespace {

// libjpeg reports through these callbacks; an error must not return to it, so error_exit
// jumps back to decode_jpeg, which then throws (no C++ exception crosses libjpeg's C frames).
struct ErrorManager {
    jpeg_error_mgr pub;  // first, so libjpeg's pointer to it is a pointer to the whole
    std::jmp_buf jump;
    char error[JMSG_LENGTH_MAX];
    char first_warning[JMSG_LENGTH_MAX];
    long warnings;
};

void on_error(j_common_ptr cinfo) {
    auto* m = reinterpret_cast<ErrorManager*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, m->error);
    std::longjmp(m->jump, 1);
}

// Level -1 is a warning (damaged data that libjpeg decodes past); levels 0 and up are traces.
// A damaged file can warn once per block, so the first is kept and the rest counted.
void on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    auto* m = reinterpret_cast<ErrorManager*>(cinfo->err);
    if (m->warnings++ == 0) (*cinfo->err->format_message)(cinfo, m->first_warning);
}

void stay_silent(j_common_ptr) {}

// Adobe's CMYK as OpenCV's decoder converts it (grfmt_jpeg.cpp), so a CMYK file reads as before.
void cmyk_to_bgr(const std::uint8_t* cmyk, std::uint8_t* bgr, int width) {
    for (int i = 0; i < width; ++i, cmyk += 4, bgr += 3) {
        const int k = cmyk[3];
        bgr[2] = static_cast<std::uint8_t>(k - ((255 - cmyk[0]) * k >> 8));
        bgr[1] = static_cast<std::uint8_t>(k - ((255 - cmyk[1]) * k >> 8));
        bgr[0] = static_cast<std::uint8_t>(k - ((255 - cmyk[2]) * k >> 8));
    }
}

}  // namespace

cv::Mat decode_jpeg(const std::vector<std::uint8_t>& bytes, std::vector<std::string>& warnings,
                    std::string& error) {
    // Every object the jump may pass over is made before setjmp and is trivially destructible or
    // outlives it (`out`, `row`), so the jump skips no destructor.
    jpeg_decompress_struct cinfo;
    ErrorManager m;
    std::memset(&cinfo, 0, sizeof cinfo);
    std::memset(&m, 0, sizeof m);
    cv::Mat out;
    cv::Mat row;  // one CMYK row, for the conversion
    cinfo.err = jpeg_std_error(&m.pub);
    m.pub.error_exit = on_error;
    m.pub.emit_message = on_message;
    m.pub.output_message = stay_silent;
    if (setjmp(m.jump)) {
        jpeg_destroy_decompress(&cinfo);
        error = m.error;
        return {};
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
    jpeg_read_header(&cinfo, TRUE);
    const bool cmyk = cinfo.num_components == 4;
    cinfo.out_color_space =
        cinfo.num_components == 1 ? JCS_GRAYSCALE : cmyk ? JCS_CMYK : JCS_EXT_BGR;
    jpeg_start_decompress(&cinfo);
    const int width = static_cast<int>(cinfo.output_width);
    try {
        out.create(static_cast<int>(cinfo.output_height), width,
                   cinfo.output_components == 1 ? CV_8UC1 : CV_8UC3);
        if (cmyk) row.create(1, width, CV_8UC4);
    } catch (...) {  // out of memory: libjpeg's own buffers go too
        jpeg_destroy_decompress(&cinfo);
        throw;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW line = cmyk ? row.ptr<std::uint8_t>()
                             : out.ptr<std::uint8_t>(static_cast<int>(cinfo.output_scanline));
        const int y = static_cast<int>(cinfo.output_scanline);
        if (jpeg_read_scanlines(&cinfo, &line, 1) != 1) break;  // only with a suspending source
        if (cmyk) cmyk_to_bgr(row.ptr<std::uint8_t>(), out.ptr<std::uint8_t>(y), width);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (m.warnings > 0)
        warnings.push_back(
            m.warnings == 1
                ? fmt::format("the JPEG data is damaged (decoded as far as it goes; the image "
                              "may be partly blank or garbled): {}",
                              m.first_warning)
                : fmt::format("the JPEG data is damaged (decoded as far as it goes; the image "
                              "may be partly blank or garbled): {}, and {} more such warnings",
                              m.first_warning, m.warnings - 1));
    return out;
}

}  // namespace boneage::io
