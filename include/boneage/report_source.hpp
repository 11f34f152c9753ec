// What produced a result, as the reports a hospital system takes (FHIR, DICOM SR) name it.
#pragma once

#include <string>

namespace boneage {

struct ReportSource {
    std::string model_name;     // the model file's name, e.g. "default.bin"
    std::string model_version;  // what tells this model from others of the name: its version
                                // (ModelMetadata::model_version, "resnet18-3f2a9c1b7d4e")
    std::string software;       // the program and its build, e.g. "boneage 0.1.0 (9c7eb98)"
};

}  // namespace boneage
