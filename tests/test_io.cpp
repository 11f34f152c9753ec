// Reading radiographs: every format and depth gives back the pixels that were written, and
// every kind of bad input is refused with its own ErrorKind, without crashing.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <gtest/gtest.h>

#include <array>
#include <boneage/error.hpp>
#include <boneage/image.hpp>
#include <boneage/parallel.hpp>
#include <boneage/synth.hpp>
#include <fcntl.h>
#include <unistd.h>
#include <cstdio>
#include <cstdint>
#include <fstream>
#include <functional>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <utility>
#include <vector>

#include "support.hpp"

namespace boneage {
// Failure messages name the kind instead of printing its number.
void PrintTo(ErrorKind kind, std::ostream* os) { *os << to_string(kind); }
}  // namespace boneage

namespace {

namespace fs = std::filesystem;
using boneage::ErrorKind;
using boneage::test::ScratchDir;
using Bytes = std::vector<std::uint8_t>;

// Every 8-bit value at least once, in a pattern that differs between rows.
cv::Mat ramp8(int width = 64, int height = 48) {
    cv::Mat m(height, width, CV_8UC1);
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
            m.at<std::uint8_t>(y, x) = static_cast<std::uint8_t>((x * 4 + y * 7) % 256);
    return m;
}

// 16-bit values spread over the whole range, 0 and 65535 included.
cv::Mat ramp16(int width = 64, int height = 48) {
    cv::Mat m(height, width, CV_16UC1);
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
            m.at<std::uint16_t>(y, x) = static_cast<std::uint16_t>((x * 1031 + y * 977) % 65536);
    m.at<std::uint16_t>(0, 0) = 0;
    m.at<std::uint16_t>(height - 1, width - 1) = 65535;
    return m;
}

double max_difference(const cv::Mat& a, const cv::Mat& b) {
    if (a.size() != b.size() || a.type() != b.type()) return 1e9;
    return cv::norm(a, b, cv::NORM_INF);
}

Bytes read_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& file, const Bytes& bytes) {
    std::ofstream out(file, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
}

void write_file(const fs::path& file, const std::string& text) {
    write_file(file, Bytes(text.begin(), text.end()));
}

// The kind of error reading `file` throws; checks the error names the file.
ErrorKind kind_of(const fs::path& file, const boneage::ReadLimits& limits = {}) {
    try {
        boneage::read_radiograph(file, limits);
    } catch (const boneage::Error& e) {
        EXPECT_EQ(e.file(), file);
        EXPECT_NE(std::string(e.what()).find(file.filename().string()), std::string::npos);
        return e.kind();
    }
    ADD_FAILURE() << file << " was read without an error";
    return ErrorKind::Internal;
}

// --- a minimal PNG writer, for what cv::imwrite cannot make (palettes, lying headers) ---

std::uint32_t crc32(const std::uint8_t* data, std::size_t size, std::uint32_t crc = 0) {
    crc = ~crc;
    for (std::size_t i = 0; i < size; ++i) {
        crc ^= data[i];
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

void put_be32(Bytes& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8)
        out.push_back(static_cast<std::uint8_t>(v >> shift));
}

void put_chunk(Bytes& png, const char* type, const Bytes& data) {
    put_be32(png, static_cast<std::uint32_t>(data.size()));
    Bytes body(type, type + 4);
    body.insert(body.end(), data.begin(), data.end());
    png.insert(png.end(), body.begin(), body.end());
    put_be32(png, crc32(body.data(), body.size()));
}

Bytes png_ihdr(std::uint32_t width, std::uint32_t height, std::uint8_t bits, std::uint8_t colour) {
    Bytes ihdr;
    put_be32(ihdr, width);
    put_be32(ihdr, height);
    ihdr.insert(ihdr.end(), {bits, colour, 0, 0, 0});
    return ihdr;
}

// zlib stream made of stored (uncompressed) deflate blocks.
Bytes zlib_stored(const Bytes& raw) {
    Bytes z = {0x78, 0x01};
    std::size_t pos = 0;
    do {
        const std::size_t n = std::min<std::size_t>(raw.size() - pos, 65535);
        const bool last = pos + n == raw.size();
        z.insert(z.end(),
                 {static_cast<std::uint8_t>(last ? 1 : 0), static_cast<std::uint8_t>(n & 0xff),
                  static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(~n & 0xff),
                  static_cast<std::uint8_t>((~n >> 8) & 0xff)});
        z.insert(z.end(), raw.begin() + static_cast<long>(pos),
                 raw.begin() + static_cast<long>(pos + n));
        pos += n;
    } while (pos < raw.size());
    std::uint32_t a = 1, b = 0;
    for (std::uint8_t v : raw) {
        a = (a + v) % 65521;
        b = (b + a) % 65521;
    }
    put_be32(z, (b << 16) | a);
    return z;
}

// An 8-bit palette PNG whose entry i is the grey level 255 - i, holding `indices`.
Bytes palette_png(const cv::Mat& indices) {
    Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put_chunk(png, "IHDR", png_ihdr(indices.cols, indices.rows, 8, 3));
    Bytes palette;
    for (int i = 0; i < 256; ++i)
        palette.insert(palette.end(), 3, static_cast<std::uint8_t>(255 - i));
    put_chunk(png, "PLTE", palette);
    Bytes raw;
    for (int y = 0; y < indices.rows; ++y) {
        raw.push_back(0);  // filter: none
        raw.insert(raw.end(), indices.ptr<std::uint8_t>(y),
                   indices.ptr<std::uint8_t>(y) + indices.cols);
    }
    put_chunk(png, "IDAT", zlib_stored(raw));
    put_chunk(png, "IEND", {});
    return png;
}

// --- a minimal uncompressed TIFF writer, for the WhiteIsZero interpretation ---

void put_le(Bytes& out, std::uint32_t v, int width) {
    for (int i = 0; i < width; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// One strip, uncompressed, 8 or 16 bits as `grey` is.
Bytes grey_tiff(const cv::Mat& grey, int photometric) {
    const std::uint32_t count = 9, pixels_at = 8 + 2 + count * 12 + 4;
    const cv::Mat c = grey.clone();
    const auto bytes = static_cast<std::uint32_t>(c.dataend - c.datastart);
    Bytes t = {'I', 'I', 42, 0};
    put_le(t, 8, 4);
    put_le(t, count, 2);
    const std::array<std::array<std::uint32_t, 3>, 9> entries = {
        {{256, 4, static_cast<std::uint32_t>(c.cols)},
         {257, 4, static_cast<std::uint32_t>(c.rows)},
         {258, 3, c.depth() == CV_16U ? 16u : 8u},
         {259, 3, 1},
         {262, 3, static_cast<std::uint32_t>(photometric)},
         {273, 4, pixels_at},
         {277, 3, 1},
         {278, 4, static_cast<std::uint32_t>(c.rows)},
         {279, 4, bytes}}};
    for (const auto& [tag, type, value] : entries) {
        put_le(t, tag, 2);
        put_le(t, type, 2);
        put_le(t, 1, 4);
        put_le(t, value, 4);
    }
    put_le(t, 0, 4);                            // no next directory
    t.insert(t.end(), c.datastart, c.dataend);  // little-endian samples on this machine
    return t;
}

// --- DICOM edits made with DCMTK directly, for files write_dicom would never produce ---

void edit_dicom(const fs::path& file, const std::function<void(DcmDataset&)>& edit,
                E_TransferSyntax syntax = EXS_LittleEndianExplicit) {
    DcmFileFormat dicom;
    ASSERT_TRUE(dicom.loadFile(file.c_str()).good());
    // Large elements are read lazily from the file, which the save below overwrites.
    ASSERT_TRUE(dicom.loadAllDataIntoMemory().good());
    edit(*dicom.getDataset());
    ASSERT_TRUE(dicom.saveFile(file.c_str(), syntax).good());
}

// Replaces the pixel data by one bogus fragment encapsulated in `syntax`.
void encapsulate_garbage(const fs::path& file, E_TransferSyntax syntax) {
    DcmFileFormat dicom;
    ASSERT_TRUE(dicom.loadFile(file.c_str()).good());
    DcmDataset& ds = *dicom.getDataset();
    ds.findAndDeleteElement(DCM_PixelData);
    auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
    sequence->insert(new DcmPixelItem(DCM_PixelItemTag));  // empty offset table
    auto* fragment = new DcmPixelItem(DCM_PixelItemTag);
    Uint8 junk[64];
    for (int i = 0; i < 64; ++i) junk[i] = static_cast<Uint8>(i * 37 + 11);
    junk[0] = 0xff;
    junk[1] = 0x4f;  // a JPEG 2000 codestream would start here, but this one does not go on
    fragment->putUint8Array(junk, sizeof junk);
    sequence->insert(fragment);
    auto* pixels = new DcmPixelData(DCM_PixelData);
    pixels->putOriginalRepresentation(syntax, nullptr, sequence);
    ASSERT_TRUE(ds.insert(pixels, true).good());
    ASSERT_TRUE(dicom.saveFile(file.c_str(), syntax).good());
}

}  // namespace

// ---------------------------------------------------------------- raster formats

// What an answer may quote of an exception: its first line, never a backtrace after it.
TEST(FirstLine, KeepsTheMessageAndDropsWhatFollowsItsFirstLineEnd) {
    EXPECT_EQ(boneage::first_line("shape mismatch\nException raised from foo at bar.cpp:12"),
              "shape mismatch");
    EXPECT_EQ(boneage::first_line("one line"), "one line");
    EXPECT_EQ(boneage::first_line("\nafter"), "");
}

TEST(ReadRadiograph, Grey8BitPngReadsBackExactly) {
    ScratchDir dir("io");
    const cv::Mat written = ramp8();
    boneage::write_image(dir / "grey.png", written);
    const auto r = boneage::read_radiograph(dir / "grey.png");
    EXPECT_EQ(max_difference(r.pixels, written), 0);
    EXPECT_EQ(r.info.format, "png");
    EXPECT_EQ(r.info.width, 64);
    EXPECT_EQ(r.info.height, 48);
    EXPECT_EQ(r.info.bits_stored, 8);
    EXPECT_EQ(r.info.channels, 1);
    EXPECT_EQ(r.info.photometric, "MONOCHROME2");
    EXPECT_FALSE(r.info.inverted);
    EXPECT_FALSE(r.info.pixel_spacing_mm);
}

TEST(ReadRadiograph, Grey16BitPngStaysSixteenBits) {
    ScratchDir dir("io");
    const cv::Mat written = ramp16();
    boneage::write_image(dir / "grey16.png", written);
    const auto r = boneage::read_radiograph(dir / "grey16.png");
    EXPECT_EQ(r.pixels.type(), CV_16UC1);
    EXPECT_EQ(max_difference(r.pixels, written), 0);
    EXPECT_EQ(r.info.bits_stored, 16);
}

TEST(ReadRadiograph, RgbBecomesItsLuminance) {
    ScratchDir dir("io");
    const cv::Mat grey = ramp8();
    cv::Mat colour;
    cv::merge(std::vector<cv::Mat>{grey, grey, grey}, colour);
    colour.at<cv::Vec3b>(0, 0) = {0, 0, 255};  // pure red, BGR order
    boneage::write_image(dir / "rgb.png", colour);
    const auto r = boneage::read_radiograph(dir / "rgb.png");
    ASSERT_EQ(r.pixels.type(), CV_8UC1);
    EXPECT_EQ(r.info.channels, 3);
    EXPECT_EQ(r.info.photometric, "RGB");
    EXPECT_NEAR(r.pixels.at<std::uint8_t>(0, 0), 76, 1);  // 0.299 x 255
    cv::Mat expected = grey.clone();
    expected.at<std::uint8_t>(0, 0) = r.pixels.at<std::uint8_t>(0, 0);
    EXPECT_EQ(max_difference(r.pixels, expected), 0);
}

TEST(ReadRadiograph, RgbaIgnoresAlpha) {
    ScratchDir dir("io");
    const cv::Mat grey = ramp8();
    cv::Mat alpha(grey.size(), CV_8UC1);
    cv::randu(alpha, 0, 256);
    cv::Mat rgba;
    cv::merge(std::vector<cv::Mat>{grey, grey, grey, alpha}, rgba);
    boneage::write_image(dir / "rgba.png", rgba);
    const auto r = boneage::read_radiograph(dir / "rgba.png");
    EXPECT_EQ(r.info.channels, 4);
    EXPECT_EQ(max_difference(r.pixels, grey), 0);
}

TEST(ReadRadiograph, PalettePngIsLookedUp) {
    ScratchDir dir("io");
    const cv::Mat indices = ramp8(40, 32);
    write_file(dir / "palette.png", palette_png(indices));
    const auto r = boneage::read_radiograph(dir / "palette.png");
    cv::Mat expected;
    cv::subtract(cv::Scalar::all(255), indices, expected);
    EXPECT_EQ(max_difference(r.pixels, expected), 0);
    EXPECT_EQ(r.info.photometric, "PALETTE COLOR");
}

TEST(ReadRadiograph, JpegIsCloseToWhatWasWritten) {
    ScratchDir dir("io");
    cv::Mat smooth(96, 128, CV_8UC1);
    for (int y = 0; y < smooth.rows; ++y)
        for (int x = 0; x < smooth.cols; ++x)
            smooth.at<std::uint8_t>(y, x) = static_cast<std::uint8_t>(x + y);
    ASSERT_TRUE(cv::imwrite((dir / "hand.jpg").string(), smooth, {cv::IMWRITE_JPEG_QUALITY, 98}));
    const auto r = boneage::read_radiograph(dir / "hand.jpg");
    EXPECT_EQ(r.info.format, "jpeg");
    EXPECT_EQ(r.pixels.type(), CV_8UC1);
    EXPECT_LE(max_difference(r.pixels, smooth), 3);
}

// Everything written to stderr (file descriptor 2) while it lives; libjpeg writes there.
class StderrCapture {
public:
    explicit StderrCapture(const fs::path& file) : file_(file) {
        std::fflush(stderr);
        saved_ = ::dup(2);
        const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ::dup2(fd, 2);
        ::close(fd);
    }
    ~StderrCapture() { restore(); }
    std::string text() {
        restore();
        std::ifstream in(file_);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }

private:
    void restore() {
        if (saved_ < 0) return;
        std::fflush(stderr);
        ::dup2(saved_, 2);
        ::close(saved_);
        saved_ = -1;
    }
    fs::path file_;
    int saved_ = -1;
};

TEST(ReadRadiograph, CutShortJpegReadsWithAWarningAndPrintsNothing) {
    ScratchDir dir("io");
    boneage::SynthOptions o;
    o.width = 256;
    o.height = 320;
    const cv::Mat film = boneage::make_phantom({"1", 120.0, true}, 3, o).image;
    std::vector<std::uint8_t> jpeg;
    ASSERT_TRUE(cv::imencode(".jpg", film, jpeg, {cv::IMWRITE_JPEG_QUALITY, 90}));
    write_file(dir / "whole.jpg", jpeg);
    // The scan cut at 60% and closed with an end-of-image marker, as a transfer that stopped
    // early and a writer that closed the file leave it: whole in structure, short of data.
    Bytes cut(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(jpeg.size() * 6 / 10));
    cut.push_back(0xff);
    cut.push_back(0xd9);
    write_file(dir / "cut.jpg", cut);

    StderrCapture captured(dir / "stderr.txt");
    const auto whole = boneage::read_radiograph(dir / "whole.jpg");
    const auto damaged = boneage::read_radiograph(dir / "cut.jpg");
    const std::string printed = captured.text();

    EXPECT_TRUE(whole.info.warnings.empty());
    EXPECT_EQ(damaged.pixels.size(), film.size());
    ASSERT_EQ(damaged.info.warnings.size(), 1u);
    const std::string& warning = damaged.info.warnings.front();
    EXPECT_NE(warning.find("damaged"), std::string::npos) << warning;
    EXPECT_NE(warning.find("Corrupt JPEG data: premature end of data segment"), std::string::npos)
        << warning;
    EXPECT_EQ(printed, "");  // the library prints nothing; the warning is in the result
    // The top of the film decoded as it was written; the missing rows are not.
    EXPECT_LE(max_difference(damaged.pixels.rowRange(0, 32), whole.pixels.rowRange(0, 32)), 0);
    EXPECT_GT(max_difference(damaged.pixels, whole.pixels), 0);
}

TEST(ReadRadiograph, BmpReadsBackExactly) {
    ScratchDir dir("io");
    const cv::Mat grey = ramp8(61, 37);  // odd width: rows are padded to 4 bytes
    boneage::write_image(dir / "grey.bmp", grey);
    cv::Mat colour;
    cv::merge(std::vector<cv::Mat>{grey, grey, grey}, colour);
    boneage::write_image(dir / "colour.bmp", colour);
    for (const char* name : {"grey.bmp", "colour.bmp"}) {
        const auto r = boneage::read_radiograph(dir / name);
        EXPECT_EQ(r.info.format, "bmp");
        EXPECT_EQ(max_difference(r.pixels, grey), 0) << name;
    }
}

TEST(ReadRadiograph, Tiff16BitReadsBackExactly) {
    ScratchDir dir("io");
    const cv::Mat written = ramp16();
    boneage::write_image(dir / "grey16.tif", written);
    const auto r = boneage::read_radiograph(dir / "grey16.tif");
    EXPECT_EQ(r.info.format, "tiff");
    EXPECT_EQ(r.pixels.type(), CV_16UC1);
    EXPECT_EQ(max_difference(r.pixels, written), 0);
}

TEST(ReadRadiograph, WhiteIsZeroTiffComesOutWithBoneBright) {
    ScratchDir dir("io");
    for (const cv::Mat& grey : {ramp8(33, 35), ramp16(33, 35)}) {
        cv::Mat stored;
        cv::bitwise_not(grey, stored);
        write_file(dir / "white-is-zero.tif", grey_tiff(stored, 0));
        const auto r = boneage::read_radiograph(dir / "white-is-zero.tif");
        EXPECT_EQ(r.info.photometric, "MONOCHROME1");
        EXPECT_TRUE(r.info.inverted);
        EXPECT_EQ(max_difference(r.pixels, grey), 0) << grey.depth();
        // The same samples read as BlackIsZero come back as stored.
        write_file(dir / "black-is-zero.tif", grey_tiff(stored, 1));
        const auto plain = boneage::read_radiograph(dir / "black-is-zero.tif");
        EXPECT_FALSE(plain.info.inverted);
        EXPECT_EQ(max_difference(plain.pixels, stored), 0) << grey.depth();
    }
}

TEST(ReadRadiograph, FormatFollowsContentNotSuffix) {
    ScratchDir dir("io");
    const cv::Mat grey = ramp8();
    boneage::write_image(dir / "grey.png", grey);
    fs::copy_file(dir / "grey.png", dir / "actually-png.jpg");
    fs::copy_file(dir / "grey.png", dir / "no-suffix");
    boneage::write_dicom(dir / "scan.dcm", grey);
    fs::copy_file(dir / "scan.dcm", dir / "scan.png");
    EXPECT_EQ(boneage::read_radiograph(dir / "actually-png.jpg").info.format, "png");
    EXPECT_EQ(boneage::read_radiograph(dir / "no-suffix").info.format, "png");
    const auto dicom = boneage::read_radiograph(dir / "scan.png");
    EXPECT_EQ(dicom.info.format, "dicom");
    EXPECT_EQ(max_difference(dicom.pixels, grey), 0);
}

// ---------------------------------------------------------------- DICOM

TEST(ReadRadiograph, DicomRoundTripsBothDepths) {
    ScratchDir dir("io");
    for (const cv::Mat& written : {ramp8(), ramp16()}) {
        const fs::path file = dir / "scan.dcm";
        boneage::write_dicom(file, written);
        const auto r = boneage::read_radiograph(file);
        EXPECT_EQ(r.pixels.type(), written.type());
        EXPECT_EQ(max_difference(r.pixels, written), 0);
        EXPECT_EQ(r.info.format, "dicom");
        EXPECT_EQ(r.info.bits_stored, written.depth() == CV_16U ? 16 : 8);
        EXPECT_EQ(r.info.photometric, "MONOCHROME2");
        EXPECT_FALSE(r.info.inverted);
    }
}

TEST(ReadRadiograph, DicomOfAnImageRegionRoundTrips) {
    ScratchDir dir("io");
    const cv::Mat region = ramp16(80, 60)(cv::Rect(3, 5, 41, 33));  // rows not contiguous
    boneage::write_dicom(dir / "region.dcm", region);
    EXPECT_EQ(max_difference(boneage::read_radiograph(dir / "region.dcm").pixels, region), 0);
}

TEST(ReadRadiograph, Monochrome1IsInvertedBackToBoneBright) {
    ScratchDir dir("io");
    for (const cv::Mat& written : {ramp8(), ramp16()}) {
        const fs::path file = dir / "mono1.dcm";
        const cv::Mat before = written.clone();
        boneage::write_dicom(file, written, true);
        EXPECT_EQ(max_difference(written, before), 0) << "the caller's image was changed";
        // The file really stores inverted values...
        DcmFileFormat raw;
        ASSERT_TRUE(raw.loadFile(file.c_str()).good());
        Uint16 first = 0;
        if (written.depth() == CV_16U) {
            const Uint16* data = nullptr;
            ASSERT_TRUE(raw.getDataset()->findAndGetUint16Array(DCM_PixelData, data).good());
            first = data[0];
            EXPECT_EQ(first, 65535 - written.at<std::uint16_t>(0, 0));
        } else {
            const Uint8* data = nullptr;
            ASSERT_TRUE(raw.getDataset()->findAndGetUint8Array(DCM_PixelData, data).good());
            EXPECT_EQ(data[0], 255 - written.at<std::uint8_t>(0, 0));
        }
        // ...and reading undoes that.
        const auto r = boneage::read_radiograph(file);
        EXPECT_EQ(max_difference(r.pixels, written), 0);
        EXPECT_EQ(r.info.photometric, "MONOCHROME1");
        EXPECT_TRUE(r.info.inverted);
    }
}

TEST(ReadRadiograph, DicomPixelSpacingIsRead) {
    ScratchDir dir("io");
    boneage::write_dicom(dir / "spaced.dcm", ramp8(), false, 0.143);
    boneage::write_dicom(dir / "plain.dcm", ramp8());
    const auto spaced = boneage::read_radiograph(dir / "spaced.dcm");
    ASSERT_TRUE(spaced.info.pixel_spacing_mm);
    EXPECT_NEAR(*spaced.info.pixel_spacing_mm, 0.143, 1e-9);
    EXPECT_FALSE(boneage::read_radiograph(dir / "plain.dcm").info.pixel_spacing_mm);

    // Projection radiographs often give only the spacing at the detector.
    edit_dicom(dir / "plain.dcm",
               [](DcmDataset& ds) { ds.putAndInsertString(DCM_ImagerPixelSpacing, "0.2\\0.2"); });
    const auto imager = boneage::read_radiograph(dir / "plain.dcm");
    ASSERT_TRUE(imager.info.pixel_spacing_mm);
    EXPECT_NEAR(*imager.info.pixel_spacing_mm, 0.2, 1e-9);
}

TEST(ReadRadiograph, TwelveBitDicomIsStretchedOverSixteenBits) {
    ScratchDir dir("io");
    cv::Mat stored(32, 64, CV_16UC1);
    for (int y = 0; y < stored.rows; ++y)
        for (int x = 0; x < stored.cols; ++x)
            stored.at<std::uint16_t>(y, x) = static_cast<std::uint16_t>((y * 64 + x) * 2);
    stored.at<std::uint16_t>(31, 63) = 4095;
    const fs::path file = dir / "twelve.dcm";
    boneage::write_dicom(file, stored);
    edit_dicom(file, [](DcmDataset& ds) {
        ds.putAndInsertUint16(DCM_BitsStored, 12);
        ds.putAndInsertUint16(DCM_HighBit, 11);
        ds.findAndDeleteElement(DCM_WindowCenter);
        ds.findAndDeleteElement(DCM_WindowWidth);
    });
    const auto r = boneage::read_radiograph(file);
    EXPECT_EQ(r.info.bits_stored, 12);
    ASSERT_EQ(r.pixels.type(), CV_16UC1);
    // No window in the file: the value range itself is stretched to 0..65535.
    cv::Mat expected;
    stored.convertTo(expected, CV_32F, 65535.0 / 4095.0);
    cv::Mat got;
    r.pixels.convertTo(got, CV_32F);
    EXPECT_LE(cv::norm(got, expected, cv::NORM_INF), 20.0);
    EXPECT_EQ(r.pixels.at<std::uint16_t>(0, 0), 0);
    EXPECT_EQ(r.pixels.at<std::uint16_t>(31, 63), 65535);
}

TEST(ReadRadiograph, DicomWindowAppliesAfterRescale) {
    ScratchDir dir("io");
    cv::Mat stored(1, 2001, CV_16UC1);
    for (int x = 0; x < stored.cols; ++x)
        stored.at<std::uint16_t>(0, x) = static_cast<std::uint16_t>(x);
    const fs::path file = dir / "window.dcm";
    boneage::write_dicom(file, stored);
    // Modality values 2 x stored - 1000; the window shows modality 0..2000 = stored 500..1500.
    edit_dicom(file, [](DcmDataset& ds) {
        ds.putAndInsertString(DCM_RescaleSlope, "2");
        ds.putAndInsertString(DCM_RescaleIntercept, "-1000");
        ds.putAndInsertString(DCM_WindowCenter, "1000");
        ds.putAndInsertString(DCM_WindowWidth, "2000");
    });
    boneage::ReadLimits one_row;  // a row of values, not a radiograph
    one_row.min_side = 1;
    one_row.max_aspect = stored.cols;
    const cv::Mat p = boneage::read_radiograph(file, one_row).pixels;
    ASSERT_EQ(p.type(), CV_16UC1);
    EXPECT_EQ(p.at<std::uint16_t>(0, 100), 0);
    EXPECT_EQ(p.at<std::uint16_t>(0, 499), 0);
    EXPECT_NEAR(p.at<std::uint16_t>(0, 1000), 32768, 100);
    EXPECT_EQ(p.at<std::uint16_t>(0, 1501), 65535);
    EXPECT_EQ(p.at<std::uint16_t>(0, 2000), 65535);
}

TEST(ReadRadiograph, DicomWithoutPreambleIsRecognised) {
    ScratchDir dir("io");
    const cv::Mat written = ramp16();
    boneage::write_dicom(dir / "full.dcm", written);
    DcmFileFormat dicom;
    ASSERT_TRUE(dicom.loadFile((dir / "full.dcm").c_str()).good());
    // A bare dataset, implicit VR, as some old archives store them: no preamble, no "DICM".
    ASSERT_TRUE(
        dicom.getDataset()->saveFile((dir / "bare").c_str(), EXS_LittleEndianImplicit).good());
    const auto r = boneage::read_radiograph(dir / "bare");
    EXPECT_EQ(r.info.format, "dicom");
    EXPECT_EQ(max_difference(r.pixels, written), 0);
}

TEST(ReadRadiograph, RgbDicomBecomesGrey) {
    ScratchDir dir("io");
    const cv::Mat grey = ramp8();
    boneage::write_dicom(dir / "rgb.dcm", grey);
    edit_dicom(dir / "rgb.dcm", [&](DcmDataset& ds) {
        Bytes rgb;
        for (int y = 0; y < grey.rows; ++y)
            for (int x = 0; x < grey.cols; ++x)
                rgb.insert(rgb.end(), 3, grey.at<std::uint8_t>(y, x));
        ds.putAndInsertUint16(DCM_SamplesPerPixel, 3);
        ds.putAndInsertUint16(DCM_PlanarConfiguration, 0);
        ds.putAndInsertString(DCM_PhotometricInterpretation, "RGB");
        ds.putAndInsertUint8Array(DCM_PixelData, rgb.data(),
                                  static_cast<unsigned long>(rgb.size()));
    });
    const auto r = boneage::read_radiograph(dir / "rgb.dcm");
    EXPECT_EQ(r.info.channels, 3);
    EXPECT_EQ(r.info.photometric, "RGB");
    EXPECT_EQ(max_difference(r.pixels, grey), 0);
}

TEST(ReadRadiograph, MultiFrameDicomGivesTheFirstFrame) {
    ScratchDir dir("io");
    const cv::Mat both = ramp8(64, 96);  // two 64 x 48 frames, one above the other
    boneage::write_dicom(dir / "frames.dcm", both);
    edit_dicom(dir / "frames.dcm", [](DcmDataset& ds) {
        ds.putAndInsertUint16(DCM_Rows, 48);
        ds.putAndInsertString(DCM_NumberOfFrames, "2");
    });
    const auto r = boneage::read_radiograph(dir / "frames.dcm");
    EXPECT_EQ(max_difference(r.pixels, both.rowRange(0, 48)), 0);
}

TEST(ReadRadiograph, ReadsInParallel) {
    ScratchDir dir("io");
    const cv::Mat grey = ramp16();
    boneage::write_dicom(dir / "a.dcm", grey, true);
    boneage::write_image(dir / "a.png", grey);
    std::vector<double> differences(64, -1.0);
    boneage::parallel_for(differences.size(), 4, [&](std::size_t i) {
        const auto r = boneage::read_radiograph(dir / (i % 2 ? "a.dcm" : "a.png"));
        differences[i] = max_difference(r.pixels, grey);
    });
    for (double d : differences) EXPECT_EQ(d, 0);
}

// ---------------------------------------------------------------- refusals

TEST(ReadRadiographErrors, MissingEmptyAndFolder) {
    ScratchDir dir("io");
    EXPECT_EQ(kind_of(dir / "absent.png"), ErrorKind::NotFound);
    write_file(dir / "empty.png", Bytes{});
    EXPECT_EQ(kind_of(dir / "empty.png"), ErrorKind::Empty);
    fs::create_directory(dir / "folder.png");
    EXPECT_EQ(kind_of(dir / "folder.png"), ErrorKind::NotFound);
}

TEST(ReadRadiographErrors, TextNamedPngIsNotAnImage) {
    ScratchDir dir("io");
    write_file(dir / "notes.png", std::string("patient 12, left hand, see film\n"));
    EXPECT_EQ(kind_of(dir / "notes.png"), ErrorKind::NotAnImage);
    write_file(dir / "short.dcm", std::string("x"));
    EXPECT_EQ(kind_of(dir / "short.dcm"), ErrorKind::NotAnImage);
}

TEST(ReadRadiographErrors, CutFilesAreTruncated) {
    ScratchDir dir("io");
    cv::Mat noisy(120, 160, CV_8UC1);
    cv::randu(noisy, 0, 256);  // noise keeps the compressed files large enough to cut
    boneage::write_image(dir / "whole.png", noisy);
    boneage::write_image(dir / "whole.jpg", noisy);
    boneage::write_image(dir / "whole.tif", noisy);
    boneage::write_image(dir / "whole.bmp", noisy);
    boneage::write_dicom(dir / "whole.dcm", ramp16(64, 64));
    for (const char* suffix : {".png", ".jpg", ".tif", ".bmp", ".dcm"}) {
        Bytes bytes = read_file(dir / (std::string("whole") + suffix));
        ASSERT_GT(bytes.size(), 1000u);
        bytes.resize(bytes.size() / 2);
        const fs::path cut = dir / (std::string("cut") + suffix);
        write_file(cut, bytes);
        EXPECT_EQ(kind_of(cut), ErrorKind::Truncated) << suffix;
        bytes.resize(40);  // only the first bytes of the header
        write_file(cut, bytes);
        const ErrorKind early = kind_of(cut);
        EXPECT_TRUE(early == ErrorKind::Truncated || early == ErrorKind::NotAnImage) << suffix;
    }
}

TEST(ReadRadiographErrors, HugeHeaderIsRefusedBeforeDecoding) {
    ScratchDir dir("io");
    // A valid signature and IHDR claiming 60,000 x 60,000, and nothing else.
    Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put_chunk(png, "IHDR", png_ihdr(60000, 60000, 8, 0));
    write_file(dir / "huge.png", png);
    EXPECT_EQ(kind_of(dir / "huge.png"), ErrorKind::TooLarge);

    // The same through DICOM Rows/Columns.
    boneage::write_dicom(dir / "huge.dcm", ramp8(8, 8));
    edit_dicom(dir / "huge.dcm", [](DcmDataset& ds) {
        ds.putAndInsertUint16(DCM_Rows, 60000);
        ds.putAndInsertUint16(DCM_Columns, 60000);
    });
    EXPECT_EQ(kind_of(dir / "huge.dcm"), ErrorKind::TooLarge);
}

TEST(ReadRadiographErrors, LimitsAreTheCallers) {
    ScratchDir dir("io");
    boneage::write_image(dir / "wide.png", ramp8(200, 40));
    boneage::ReadLimits narrow;
    narrow.max_side = 100;
    EXPECT_EQ(kind_of(dir / "wide.png", narrow), ErrorKind::TooLarge);
    boneage::ReadLimits few;
    few.max_pixels = 7999;
    EXPECT_EQ(kind_of(dir / "wide.png", few), ErrorKind::TooLarge);
    few.max_pixels = 8000;
    EXPECT_NO_THROW(boneage::read_radiograph(dir / "wide.png", few));
}

// Smaller or narrower than any radiograph: refused on read, as one line naming the file, so
// no later step meets an image it cannot work on.
TEST(ReadRadiographErrors, TinyAndStripImagesAreRefusedOnRead) {
    ScratchDir dir("io");
    boneage::write_image(dir / "dot.png", cv::Mat(1, 1, CV_8UC1, cv::Scalar(128)));
    boneage::write_image(dir / "strip.png", ramp8(3000, 2));
    boneage::write_image(dir / "narrow.png", ramp8(40, 600));  // both sides fine, 15:1
    boneage::write_dicom(dir / "dot.dcm", cv::Mat(1, 1, CV_16UC1, cv::Scalar(900)));
    const std::pair<const char*, const char*> cases[] = {{"dot.png", "1 x 1"},
                                                          {"strip.png", "at least 32"},
                                                          {"narrow.png", "15"},
                                                          {"dot.dcm", "1 x 1"}};
    for (const auto& [name, reason_part] : cases) {
        SCOPED_TRACE(name);
        try {
            boneage::read_radiograph(dir / name);
            ADD_FAILURE() << name << " was read";
        } catch (const boneage::Error& e) {
            EXPECT_EQ(e.kind(), ErrorKind::Unsupported) << e.what();
            EXPECT_EQ(e.file(), dir / name);
            EXPECT_NE(e.reason().find(reason_part), std::string::npos) << e.reason();
            EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        }
    }

    // At the limits, and past them for a caller that lowers them.
    boneage::write_image(dir / "square.png", ramp8(32, 32));
    boneage::write_image(dir / "wide.png", ramp8(320, 32));
    EXPECT_NO_THROW(boneage::read_radiograph(dir / "square.png"));
    EXPECT_NO_THROW(boneage::read_radiograph(dir / "wide.png"));
    boneage::ReadLimits any;
    any.min_side = 1;
    any.max_aspect = 3000;
    EXPECT_NO_THROW(boneage::read_radiograph(dir / "dot.png", any));
    EXPECT_NO_THROW(boneage::read_radiograph(dir / "strip.png", any));
}

TEST(ReadRadiographErrors, DicomWithoutPixelData) {
    ScratchDir dir("io");
    boneage::write_dicom(dir / "report.dcm", ramp8());
    edit_dicom(dir / "report.dcm", [](DcmDataset& ds) { ds.findAndDeleteElement(DCM_PixelData); });
    EXPECT_EQ(kind_of(dir / "report.dcm"), ErrorKind::NoPixelData);
    edit_dicom(dir / "report.dcm", [](DcmDataset& ds) { ds.insertEmptyElement(DCM_PixelData); });
    EXPECT_EQ(kind_of(dir / "report.dcm"), ErrorKind::NoPixelData);
}

TEST(ReadRadiographErrors, DicomPixelDataShorterThanItsHeaderSays) {
    ScratchDir dir("io");
    boneage::write_dicom(dir / "short.dcm", ramp8());
    edit_dicom(dir / "short.dcm", [](DcmDataset& ds) { ds.putAndInsertUint16(DCM_Rows, 96); });
    EXPECT_EQ(kind_of(dir / "short.dcm"), ErrorKind::Truncated);
}

TEST(ReadRadiographErrors, UndecodableCompressionIsUnsupported) {
    ScratchDir dir("io");
    boneage::write_dicom(dir / "j2k.dcm", ramp8());
    encapsulate_garbage(dir / "j2k.dcm", EXS_JPEG2000LosslessOnly);
    EXPECT_EQ(kind_of(dir / "j2k.dcm"), ErrorKind::Unsupported);
}

TEST(ReadRadiographErrors, CorruptCompressedDicomIsRefusedWithoutCrashing) {
    ScratchDir dir("io");
    for (E_TransferSyntax syntax :
         {EXS_JPEGProcess1, EXS_JPEGProcess14SV1, EXS_JPEGLSLossless, EXS_RLELossless}) {
        boneage::write_dicom(dir / "bad.dcm", ramp8());
        encapsulate_garbage(dir / "bad.dcm", syntax);
        const ErrorKind kind = kind_of(dir / "bad.dcm");
        EXPECT_TRUE(kind == ErrorKind::Truncated || kind == ErrorKind::Unsupported)
            << DcmXfer(syntax).getXferName() << " gave " << to_string(kind);
    }
}

TEST(ReadRadiographErrors, DamagedFilesGiveTypedErrorsNeverCrashes) {
    ScratchDir dir("io");
    cv::Mat noisy(40, 50, CV_8UC1);
    cv::randu(noisy, 0, 256);
    boneage::write_image(dir / "a.png", noisy);
    boneage::write_image(dir / "a.jpg", noisy);
    boneage::write_image(dir / "a.tif", ramp16(40, 50));
    boneage::write_image(dir / "a.bmp", noisy);
    boneage::write_dicom(dir / "a.dcm", ramp16(40, 50), true, 0.1);
    cv::RNG rng(20240611);
    for (const char* name : {"a.png", "a.jpg", "a.tif", "a.bmp", "a.dcm"}) {
        const Bytes whole = read_file(dir / name);
        int refused = 0;
        for (int trial = 0; trial < 60; ++trial) {
            Bytes damaged = whole;
            // Damage the headers more often than the pixels: that is where parsers go wrong.
            const int flips = 1 + rng.uniform(0, 4);
            for (int i = 0; i < flips; ++i) {
                const int limit = rng.uniform(0, 2) ? 400 : static_cast<int>(damaged.size());
                damaged[rng.uniform(0, std::min<int>(limit, static_cast<int>(damaged.size())))] =
                    static_cast<std::uint8_t>(rng.uniform(0, 256));
            }
            if (trial % 4 == 0) damaged.resize(rng.uniform(1, static_cast<int>(damaged.size())));
            const fs::path file = dir / (std::string("damaged-") + name);
            write_file(file, damaged);
            try {
                const auto r = boneage::read_radiograph(file);
                EXPECT_FALSE(r.pixels.empty()) << name << " trial " << trial;
                EXPECT_EQ(r.pixels.channels(), 1);
            } catch (const boneage::Error& e) {
                ++refused;
                EXPECT_NE(e.kind(), ErrorKind::Internal)
                    << name << " trial " << trial << ": " << e.what();
            }
        }
        EXPECT_GT(refused, 0) << name;  // every fourth trial is cut short
    }
}

// ---------------------------------------------------------------- writing and conversion

TEST(ToEightBit, StretchesSixteenBitsOverTheirOwnRange) {
    cv::Mat deep(1, 3, CV_16UC1);
    deep.at<std::uint16_t>(0, 0) = 1000;
    deep.at<std::uint16_t>(0, 1) = 2000;
    deep.at<std::uint16_t>(0, 2) = 3000;
    const cv::Mat out = boneage::to_8bit(deep);
    ASSERT_EQ(out.type(), CV_8UC1);
    EXPECT_EQ(out.at<std::uint8_t>(0, 0), 0);
    EXPECT_NEAR(out.at<std::uint8_t>(0, 1), 128, 1);
    EXPECT_EQ(out.at<std::uint8_t>(0, 2), 255);
    const cv::Mat grey = ramp8();
    EXPECT_EQ(max_difference(boneage::to_8bit(grey), grey), 0);
    EXPECT_THROW(boneage::to_8bit(cv::Mat(2, 2, CV_8UC3)), boneage::Error);
}

TEST(WriteImage, FailuresThrowNamingTheFile) {
    ScratchDir dir("io");
    const fs::path nowhere = dir / "missing-folder" / "x.png";
    try {
        boneage::write_image(nowhere, ramp8());
        ADD_FAILURE() << "writing into a missing folder succeeded";
    } catch (const boneage::Error& e) {
        EXPECT_EQ(e.file(), nowhere);
    }
    EXPECT_THROW(boneage::write_image(dir / "x.unknown-format", ramp8()), boneage::Error);
    EXPECT_THROW(boneage::write_dicom(dir / "x.dcm", cv::Mat(4, 4, CV_8UC3)), boneage::Error);
    EXPECT_THROW(boneage::write_dicom(dir / "missing-folder" / "x.dcm", ramp8()), boneage::Error);
}

// ---------------------------------------------------------------- real radiographs

TEST(ReadRadiograph, ReadsRealRsnaImages) {
    const auto root = boneage::test::rsna_dev_dir();
    if (!root) GTEST_SKIP() << "rsna-dev data not present";
    int read = 0;
    for (const auto& entry : fs::directory_iterator(*root / "images")) {
        const auto r = boneage::read_radiograph(entry.path());
        EXPECT_EQ(r.pixels.channels(), 1) << entry.path();
        EXPECT_TRUE(r.pixels.depth() == CV_8U || r.pixels.depth() == CV_16U) << entry.path();
        EXPECT_GT(r.info.width, 200) << entry.path();
        EXPECT_GT(r.info.height, 200) << entry.path();
        EXPECT_EQ(r.info.width, r.pixels.cols);
        double low = 0, high = 0;
        cv::minMaxLoc(r.pixels, &low, &high);
        EXPECT_GT(high, low) << entry.path() << " is blank";
        if (++read == 5) break;
    }
    EXPECT_EQ(read, 5);
}
