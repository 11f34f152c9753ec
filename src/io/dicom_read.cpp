// DICOM through DCMTK. The dataset is parsed with large elements left on disk, so Rows and
// Columns are checked against the limits before the pixel data is touched; DicomImage then
// applies the modality LUT, the VOI transform and the MONOCHROME1 inversion to frame 0.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimage/diregist.h>  // colour images
#include <dcmtk/dcmimgle/dcmimage.h>

#include <opencv2/imgproc.hpp>

#include "io/readers.hpp"

namespace boneage::io {

namespace {

std::string text(DcmDataset& ds, const DcmTagKey& tag) {
    OFString value;
    return ds.findAndGetOFString(tag, value).good() ? std::string(value.c_str()) : std::string();
}

int number(DcmDataset& ds, const DcmTagKey& tag, int fallback) {
    Uint16 value = 0;
    return ds.findAndGetUint16(tag, value).good() ? value : fallback;
}

// Row spacing from PixelSpacing, else from ImagerPixelSpacing (projection radiographs).
std::optional<double> pixel_spacing(DcmDataset& ds) {
    for (const DcmTagKey& tag : {DCM_PixelSpacing, DCM_ImagerPixelSpacing}) {
        Float64 value = 0.0;
        if (ds.findAndGetFloat64(tag, value, 0).good() && value > 0.0) return value;
    }
    return std::nullopt;
}

// DCMTK pads short native pixel data with zeros; a first frame that is not all there is
// refused instead of being read half black.
void check_native_length(DcmDataset& ds, int rows, int columns, const std::filesystem::path& file) {
    DcmElement* pixels = nullptr;
    if (ds.findAndGetElement(DCM_PixelData, pixels).bad() || pixels == nullptr) return;
    const std::string photometric = text(ds, DCM_PhotometricInterpretation);
    if (photometric.rfind("YBR_FULL_422", 0) == 0) return;  // subsampled: another size rule
    const double bits = static_cast<double>(rows) * columns * number(ds, DCM_SamplesPerPixel, 1) *
                        number(ds, DCM_BitsAllocated, 16);
    if (static_cast<double>(pixels->getLength()) * 8.0 < bits)
        throw Error(ErrorKind::Truncated, file, "DICOM pixel data is shorter than one frame");
}

// The identifiers a report about this image needs (and the patient's sex and dates).
DicomIdentity identity(DcmDataset& ds) {
    DicomIdentity id;
    id.patient_id = text(ds, DCM_PatientID);
    id.patient_name = text(ds, DCM_PatientName);
    id.patient_sex = text(ds, DCM_PatientSex);
    id.patient_birth_date = text(ds, DCM_PatientBirthDate);
    id.study_date = text(ds, DCM_StudyDate);
    id.accession_number = text(ds, DCM_AccessionNumber);
    id.study_instance_uid = text(ds, DCM_StudyInstanceUID);
    id.series_instance_uid = text(ds, DCM_SeriesInstanceUID);
    id.sop_instance_uid = text(ds, DCM_SOPInstanceUID);
    id.sop_class_uid = text(ds, DCM_SOPClassUID);
    return id;
}

ErrorKind image_failure(EI_Status status) {
    switch (status) {
        case EIS_NotSupportedValue:
            return ErrorKind::Unsupported;
        case EIS_MemoryFailure:
            return ErrorKind::TooLarge;
        default:
            return ErrorKind::Truncated;
    }
}

// Picks the VOI transform: the first window the file gives, else its first VOI LUT, else
// the range of the pixel values themselves.
void choose_voi(DicomImage& image) {
    if (image.getWindowCount() > 0 && image.setWindow(0)) return;
    if (image.getVoiLutCount() > 0 && image.setVoiLut(0)) return;
    image.setMinMaxWindow(0);
}

cv::Mat render(DicomImage& image, int bits, const std::filesystem::path& file) {
    const int width = static_cast<int>(image.getWidth());
    const int height = static_cast<int>(image.getHeight());
    const bool grey = image.isMonochrome();
    if (grey) choose_voi(image);
    const int depth = grey && bits > 8 ? 16 : 8;
    const void* data = image.getOutputData(depth, 0, 0);
    if (data == nullptr)
        throw Error(ErrorKind::Truncated, file, "DICOM pixel data could not be rendered");
    const int type = !grey ? CV_8UC3 : depth == 16 ? CV_16UC1 : CV_8UC1;
    const cv::Mat view(height, width, type, const_cast<void*>(data));
    if (grey) return view.clone();
    cv::Mat out;
    cv::cvtColor(view, out, cv::COLOR_RGB2GRAY);
    return out;
}

}  // namespace

Radiograph read_dicom(const std::filesystem::path& file, const ReadLimits& limits) {
    prepare_dcmtk();
    DcmFileFormat dicom;
    // Elements longer than DCM_MaxReadLength (the pixel data) stay on disk until used.
    const OFCondition loaded =
        dicom.loadFile(file.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
    if (loaded.bad())
        throw Error(dicom.getMetaInfo()->card() > 0 ? ErrorKind::Truncated : ErrorKind::NotAnImage,
                    file, std::string("not a readable DICOM file: ") + loaded.text());
    DcmDataset& ds = *dicom.getDataset();

    if (!ds.tagExistsWithValue(DCM_PixelData)) {
        if (ds.tagExists(DCM_FloatPixelData) || ds.tagExists(DCM_DoubleFloatPixelData))
            throw Error(ErrorKind::Unsupported, file, "DICOM floating-point pixel data");
        throw Error(ErrorKind::NoPixelData, file, "DICOM file has no pixel data");
    }
    const int rows = number(ds, DCM_Rows, 0);
    const int columns = number(ds, DCM_Columns, 0);
    if (rows == 0 || columns == 0)
        throw Error(ErrorKind::Truncated, file, "DICOM file has pixel data but no Rows/Columns");
    check_limits(columns, rows, limits, file);

    const E_TransferSyntax syntax = ds.getOriginalXfer();
    const DcmXfer xfer(syntax);
    if (xfer.isEncapsulated() && !DcmCodecList::canChangeCoding(syntax, EXS_LittleEndianExplicit))
        throw Error(ErrorKind::Unsupported, file,
                    std::string("DICOM pixel data compressed as ") + xfer.getXferName() +
                        ", which cannot be decoded here");

    if (!xfer.isEncapsulated()) check_native_length(ds, rows, columns, file);

    DicomImage image(&dicom, syntax, CIF_UsePartialAccessToPixelData, 0, 1);
    if (image.getStatus() != EIS_Normal)
        throw Error(image_failure(image.getStatus()), file,
                    std::string("DICOM pixel data could not be decoded: ") +
                        DicomImage::getString(image.getStatus()));

    Radiograph r;
    r.info.format = "dicom";
    r.info.bits_stored = number(ds, DCM_BitsStored, 8);
    r.info.channels = number(ds, DCM_SamplesPerPixel, 1);
    r.info.photometric = text(ds, DCM_PhotometricInterpretation);
    // DicomImage renders MONOCHROME1 inverted already, so low stored values come out bright.
    r.info.inverted =
        image.isMonochrome() && image.getPhotometricInterpretation() == EPI_Monochrome1;
    r.info.pixel_spacing_mm = pixel_spacing(ds);
    r.info.dicom = identity(ds);
    r.pixels = render(image, r.info.bits_stored, file);
    r.info.width = r.pixels.cols;
    r.info.height = r.pixels.rows;
    return r;
}

}  // namespace boneage::io
