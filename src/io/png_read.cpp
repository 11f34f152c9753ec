// PNG through libpng itself rather than OpenCV: OpenCV leaves libpng's default handlers in
// place, which print "libpng error: IDAT: incorrect data check" and every warning to stderr.
// Here errors come back as text for a boneage::Error and warnings about the data are kept for
// the result. The transformations are OpenCV's for IMREAD_UNCHANGED (grfmt_png.cpp), so every
// PNG decodes to the same pixels as before.
#include <png.h>

#include <csetjmp>
#include <cstring>
#include <fmt/format.h>

#include "io/readers.hpp"

namespace boneage::io {

namespace {

struct Context {
    std::jmp_buf jump;
    const std::uint8_t* data;
    std::size_t size;
    std::size_t at;
    char error[256];
    char first_warning[256];
    long warnings;
};

Context& context_of(png_structp png) { return *static_cast<Context*>(png_get_error_ptr(png)); }

void copy_message(char (&to)[256], png_const_charp message) {
    std::strncpy(to, message != nullptr ? message : "", sizeof to - 1);
    to[sizeof to - 1] = '\0';
}

// libpng must not get control back after an error: jump to decode_png, which reports it.
[[noreturn]] void on_error(png_structp png, png_const_charp message) {
    copy_message(context_of(png).error, message);
    std::longjmp(context_of(png).jump, 1);
}

// Colour-management chunks that libpng finds odd leave the pixels as they were stored; the
// rest (a bad checksum, extra data) say the file is damaged, and are kept.
bool about_the_pixels(png_const_charp message) {
    for (const char* chunk : {"iCCP", "sRGB", "cHRM", "gAMA", "profile"})
        if (std::strstr(message, chunk) != nullptr) return false;
    return true;
}

void on_warning(png_structp png, png_const_charp message) {
    if (message == nullptr || !about_the_pixels(message)) return;
    Context& c = context_of(png);
    if (c.warnings++ == 0) copy_message(c.first_warning, message);
}

void read_from_memory(png_structp png, png_bytep out, png_size_t count) {
    Context& c = *static_cast<Context*>(png_get_io_ptr(png));
    if (count > c.size - c.at) png_error(png, "the file ends inside a chunk");
    std::memcpy(out, c.data + c.at, count);
    c.at += count;
}

}  // namespace

cv::Mat decode_png(const std::vector<std::uint8_t>& bytes, std::vector<std::string>& warnings,
                   std::string& error) {
    // Every object the jump may pass over is made before setjmp and outlives it, so the jump
    // skips no destructor.
    Context c;
    std::memset(&c, 0, sizeof c);
    c.data = bytes.data();
    c.size = bytes.size();
    cv::Mat out;
    std::vector<png_bytep> rows;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
    png_infop info = png != nullptr ? png_create_info_struct(png) : nullptr;
    if (info == nullptr) {
        png_destroy_read_struct(&png, nullptr, nullptr);
        error = "not enough memory to start decoding";
        return {};
    }
    if (setjmp(c.jump)) {
        png_destroy_read_struct(&png, &info, nullptr);
        error = c.error;
        return {};
    }
    png_set_read_fn(png, &c, read_from_memory);
    png_read_info(png, info);
    const png_uint_32 width = png_get_image_width(png, info);
    const png_uint_32 height = png_get_image_height(png, info);
    const int bit_depth = png_get_bit_depth(png, info);
    const int colour_type = png_get_color_type(png, info);

    // OpenCV's choice of output for IMREAD_UNCHANGED: grey stays one channel; colour and
    // palette become BGR, with a fourth channel where the file has alpha or transparency.
    const bool transparency = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    int channels = 1;
    if (colour_type == PNG_COLOR_TYPE_RGB || colour_type == PNG_COLOR_TYPE_PALETTE)
        channels = transparency ? 4 : 3;
    else if (colour_type == PNG_COLOR_TYPE_GRAY_ALPHA || colour_type == PNG_COLOR_TYPE_RGB_ALPHA)
        channels = 4;
    const int depth = bit_depth == 16 ? CV_16U : CV_8U;
    if (bit_depth == 16) png_set_swap(png);  // to the host's (little-endian) order
    if (channels < 4)
        png_set_strip_alpha(png);
    else
        png_set_tRNS_to_alpha(png);
    if (colour_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if ((colour_type & PNG_COLOR_MASK_COLOR) == 0 && bit_depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (colour_type & PNG_COLOR_MASK_COLOR)
        png_set_bgr(png);
    else if (channels > 1)
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    const std::size_t row_bytes = std::size_t(width) * channels * (depth == CV_16U ? 2 : 1);
    if (png_get_rowbytes(png, info) != row_bytes)
        png_error(png, "the rows decode to an unexpected layout");
    try {
        out.create(static_cast<int>(height), static_cast<int>(width), CV_MAKETYPE(depth, channels));
        rows.resize(height);
    } catch (...) {  // out of memory: libpng's own buffers go too
        png_destroy_read_struct(&png, &info, nullptr);
        throw;
    }
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = out.ptr<png_byte>(static_cast<int>(y));
    png_read_image(png, rows.data());
    png_read_end(png, nullptr);
    png_destroy_read_struct(&png, &info, nullptr);
    if (c.warnings > 0)
        warnings.push_back(
            c.warnings == 1
                ? fmt::format("the PNG file is damaged (decoded past it): {}", c.first_warning)
                : fmt::format("the PNG file is damaged (decoded past it): {}, and {} more such "
                              "warnings",
                              c.first_warning, c.warnings - 1));
    return out;
}

}  // namespace boneage::io
