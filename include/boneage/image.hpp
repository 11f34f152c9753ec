// Reading radiographs: PNG, JPEG, BMP, TIFF (8 or 16 bits; grey, RGB, RGBA or palette) and
// DICOM (modality LUT, then VOI LUT or window; MONOCHROME1 inverted; any bit depth).
// The format is chosen by content, not by the file name.
//
//   boneage::Radiograph r = boneage::read_radiograph("hand.dcm");
//   cv::Mat grey = r.pixels;                 // CV_8UC1 or CV_16UC1, original size
//   if (r.info.pixel_spacing_mm) ...         // from DICOM, when present
#pragma once

#include <boneage/error.hpp>

#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boneage {

// Refusal thresholds checked on the header, before any pixel is decoded.
struct ReadLimits {
    std::int64_t max_pixels = 100'000'000;  // width x height; a 1500x2000 film is 3 M
    int max_side = 30'000;                  // longest side in pixels
    // No hand radiograph is smaller or narrower than these (a 100 px thumbnail is the smallest
    // the project reads); an image that is would reach preprocessing only to fail inside it.
    int min_side = 32;                      // shortest side in pixels
    double max_aspect = 10.0;               // longer side over shorter
};

// Who and what a DICOM image belongs to, as its header says; empty strings where it says
// nothing (and for every other format). Dates are DICOM DA text, "YYYYMMDD".
struct DicomIdentity {
    std::string patient_id;            // (0010,0020)
    std::string patient_name;          // (0010,0010), DICOM PN text ("Family^Given")
    std::string patient_sex;           // (0010,0040): "M", "F" or "O"
    std::string patient_birth_date;    // (0010,0030)
    std::string study_date;            // (0008,0020)
    std::string accession_number;      // (0008,0050)
    std::string study_instance_uid;    // (0020,000D)
    std::string series_instance_uid;   // (0020,000E)
    std::string sop_instance_uid;      // (0008,0018)
    std::string sop_class_uid;         // (0008,0016)
};

// What was learned about the file while reading it.
struct ImageInfo {
    std::string format;          // "png", "jpeg", "bmp", "tiff" or "dicom"
    int width = 0;
    int height = 0;
    int bits_stored = 8;         // bits per sample in the file (DICOM BitsStored; 8 or 16 otherwise)
    int channels = 1;            // samples per pixel in the file, before conversion to grey
    std::string photometric;     // "MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", ...
    bool inverted = false;       // true when MONOCHROME1 was inverted so bone is bright
    std::optional<double> pixel_spacing_mm;  // row spacing from DICOM PixelSpacing, when given
    // How coloured the file's pixels were before conversion to grey: the spread of the two
    // opponent colour axes (Hasler and Suesstrunk's colourfulness without its mean term, so a
    // tinted scan of a film stays near 0). 0 for grey sources; above about 12, a photograph.
    double colourfulness = 0.0;
    DicomIdentity dicom;         // patient, study and instance identifiers (DICOM only)
    // Damage the decoder read past, one line each ("the JPEG data is damaged ...: Corrupt JPEG
    // data: premature end of data segment"): the pixels may be partly blank or garbled.
    std::vector<std::string> warnings;
};

// One grey radiograph at its original size: CV_8UC1 for 8-bit sources, CV_16UC1 for deeper
// ones (DICOM values after the LUTs are rescaled to the full 16-bit range). Bone is bright.
struct Radiograph {
    cv::Mat pixels;
    ImageInfo info;
};

// Reads a radiograph. Throws boneage::Error naming the file and the reason (ErrorKind tells
// NotFound, Empty, NotAnImage, Truncated, TooLarge, Unsupported, NoPixelData); an image
// smaller or narrower than `limits` allow is Unsupported, refused from its header.
Radiograph read_radiograph(const std::filesystem::path& file, const ReadLimits& limits = {});

// Converts a grey image of either depth to 8 bits, stretching 16-bit data over its own range.
cv::Mat to_8bit(const cv::Mat& grey);

// The one conversion of any decoded image to one grey channel: CV_8UC1 or CV_16UC1 as the
// source's depth allows; colour becomes luminance, alpha is dropped, and depths OpenCV cannot
// turn into grey directly (signed, float) are stretched to 16 bits.
cv::Mat to_grey(cv::Mat image);

// to_grey, then to_8bit where the result is deeper: what cropping, CLAHE and the letterbox
// work on. Throws a Usage error naming `who` for an empty image.
cv::Mat to_grey8(const cv::Mat& image, std::string_view who);

// Writes a grey 8- or 16-bit image as an uncompressed DICOM secondary capture (for phantoms
// and tests). With `monochrome1`, the stored values are inverted and the photometric
// interpretation says so. `pixel_spacing_mm` > 0 is written as PixelSpacing.
void write_dicom(const std::filesystem::path& file, const cv::Mat& grey, bool monochrome1 = false,
                 double pixel_spacing_mm = 0.0);

// The same, with the patient, study and instance identifiers of `identity` (sex, birth and
// study dates, UIDs); a UID left empty is generated, as is every UID above.
void write_dicom(const std::filesystem::path& file, const cv::Mat& grey,
                 const DicomIdentity& identity, bool monochrome1 = false,
                 double pixel_spacing_mm = 0.0);

// Writes an image with OpenCV, whole or not at all (durable_file.hpp); the format follows the
// extension. Throws boneage::Error (CannotWrite naming the path when the disk says no).
void write_image(const std::filesystem::path& file, const cv::Mat& image);

}  // namespace boneage
