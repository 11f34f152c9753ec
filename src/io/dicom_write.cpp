// write_dicom: a grey image as an uncompressed Secondary Capture object with the modules
// the standard requires, and a VOI window that shows the stored values unchanged, so that
// reading the file back gives the pixels that were written.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include <cstdio>
#include <string>

#include <boneage/durable_file.hpp>

#include "io/readers.hpp"

namespace boneage {

namespace {

class DatasetWriter {
public:
    DatasetWriter(DcmDataset& ds, const std::filesystem::path& file) : ds_(ds), file_(file) {}

    void put(const DcmTagKey& tag, const std::string& value) {
        check(ds_.putAndInsertString(tag, value.c_str()));
    }
    void put(const DcmTagKey& tag, Uint16 value) { check(ds_.putAndInsertUint16(tag, value)); }
    void check(const OFCondition& status) const {
        if (status.bad())
            throw Error(ErrorKind::Internal, file_,
                        std::string("could not build the DICOM dataset: ") + status.text());
    }

private:
    DcmDataset& ds_;
    const std::filesystem::path& file_;
};

std::string new_uid(const char* root) {
    char uid[100];
    return dcmGenerateUniqueIdentifier(uid, root);
}

std::string or_new_uid(const std::string& given, const char* root) {
    return given.empty() ? new_uid(root) : given;
}

// Patient, study, series, equipment and SOP identification: what `id` gives, else empty type
// 2 elements, present because the Secondary Capture IOD requires them.
void put_identification(DatasetWriter& out, const DicomIdentity& id) {
    out.put(DCM_SOPClassUID, id.sop_class_uid.empty() ? std::string(UID_SecondaryCaptureImageStorage)
                                                      : id.sop_class_uid);
    out.put(DCM_SOPInstanceUID, or_new_uid(id.sop_instance_uid, SITE_INSTANCE_UID_ROOT));
    out.put(DCM_StudyInstanceUID, or_new_uid(id.study_instance_uid, SITE_STUDY_UID_ROOT));
    out.put(DCM_SeriesInstanceUID, or_new_uid(id.series_instance_uid, SITE_SERIES_UID_ROOT));
    out.put(DCM_PatientName, id.patient_name);
    out.put(DCM_PatientID, id.patient_id);
    out.put(DCM_PatientBirthDate, id.patient_birth_date);
    out.put(DCM_PatientSex, id.patient_sex);
    out.put(DCM_StudyDate, id.study_date);
    out.put(DCM_AccessionNumber, id.accession_number);
    for (const DcmTagKey& tag :
         {DCM_StudyTime, DCM_ReferringPhysicianName, DCM_StudyID, DCM_SeriesNumber,
          DCM_InstanceNumber, DCM_PatientOrientation})
        out.put(tag, std::string());
    out.put(DCM_Modality, "OT");
    out.put(DCM_ConversionType, "WSD");  // workstation
}

}  // namespace

void write_dicom(const std::filesystem::path& file, const cv::Mat& grey, bool monochrome1,
                 double pixel_spacing_mm) {
    write_dicom(file, grey, DicomIdentity{}, monochrome1, pixel_spacing_mm);
}

void write_dicom(const std::filesystem::path& file, const cv::Mat& grey,
                 const DicomIdentity& identity, bool monochrome1, double pixel_spacing_mm) {
    if (grey.empty() || grey.channels() != 1 || (grey.depth() != CV_8U && grey.depth() != CV_16U))
        throw Error(ErrorKind::Usage, file, "write_dicom expects one 8- or 16-bit grey channel");
    if (grey.rows > 65535 || grey.cols > 65535)
        throw Error(ErrorKind::TooLarge, file, "DICOM rows and columns stop at 65535");
    io::prepare_dcmtk();
    const int bits = grey.depth() == CV_16U ? 16 : 8;
    // For unsigned samples, bitwise NOT is max - value: the MONOCHROME1 encoding. It goes to
    // a new buffer; the caller's image is left alone.
    cv::Mat stored;
    if (monochrome1)
        cv::bitwise_not(grey, stored);
    else
        stored = grey.isContinuous() ? grey : grey.clone();

    DcmFileFormat dicom;
    DcmDataset& ds = *dicom.getDataset();
    DatasetWriter out(ds, file);
    put_identification(out, identity);

    out.put(DCM_SamplesPerPixel, Uint16{1});
    out.put(DCM_PhotometricInterpretation, monochrome1 ? "MONOCHROME1" : "MONOCHROME2");
    out.put(DCM_Rows, static_cast<Uint16>(grey.rows));
    out.put(DCM_Columns, static_cast<Uint16>(grey.cols));
    out.put(DCM_BitsAllocated, static_cast<Uint16>(bits));
    out.put(DCM_BitsStored, static_cast<Uint16>(bits));
    out.put(DCM_HighBit, static_cast<Uint16>(bits - 1));
    out.put(DCM_PixelRepresentation, Uint16{0});
    // Centre 2^(bits-1), width 2^bits: the identity under the standard's linear window.
    out.put(DCM_WindowCenter, std::to_string(1 << (bits - 1)));
    out.put(DCM_WindowWidth, std::to_string(1 << bits));
    if (pixel_spacing_mm > 0.0) {
        char s[32];  // a DS value holds at most 16 characters
        std::snprintf(s, sizeof s, "%.8g", pixel_spacing_mm);
        out.put(DCM_PixelSpacing, std::string(s) + "\\" + s);
    }
    const unsigned long count = static_cast<unsigned long>(stored.total());
    if (bits == 16)
        out.check(ds.putAndInsertUint16Array(DCM_PixelData, stored.ptr<Uint16>(), count));
    else
        out.check(ds.putAndInsertUint8Array(DCM_PixelData, stored.ptr<Uint8>(), count));

    TempFileGuard tmp(temp_beside(file));
    const OFCondition saved = dicom.saveFile(tmp.path().c_str(), EXS_LittleEndianExplicit);
    if (saved.bad())
        throw Error(ErrorKind::CannotWrite, file,
                    std::string("could not be written: ") + saved.text());
    tmp.commit(file);
}

}  // namespace boneage
