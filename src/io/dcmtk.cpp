// One-time DCMTK set-up shared by the DICOM reader and writer.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <mutex>

#include "io/readers.hpp"

namespace boneage::io {

void prepare_dcmtk() {
    static std::once_flag once;
    std::call_once(once, [] {
        // The library never prints; DCMTK's warnings would otherwise reach the console.
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
        // Compressed syntaxes this DCMTK build can decode; the rest are refused as unsupported.
        DJDecoderRegistration::registerCodecs();    // JPEG baseline, extended, lossless
        DJLSDecoderRegistration::registerCodecs();  // JPEG-LS
        DcmRLEDecoderRegistration::registerCodecs();
    });
}

}  // namespace boneage::io
