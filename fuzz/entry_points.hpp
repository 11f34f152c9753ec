// What the fuzz targets feed their bytes to, shared with tests/test_fuzz_regressions.cpp so
// that every input a fuzzer found trouble with is replayed by the ordinary tests through the
// same code. Each entry point takes the bytes as they would arrive from outside (a file on
// disk, a request on a socket) and either returns or throws boneage::Error; anything else
// (another exception, a crash, a sanitizer report) is a finding.
//
//   boneage::fuzz::read_image(data, size);   // throws boneage::Error for a bad image
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace boneage::fuzz {

// read_radiograph on the bytes as a file: every format it accepts, chosen by content.
void read_image(const std::uint8_t* data, std::size_t size);

// read_radiograph on the bytes as a file, for the DICOM reader (its seeds and dictionary
// differ; the content still chooses the reader).
void read_dicom(const std::uint8_t* data, std::size_t size);

// The bytes as a labels file (read_labels, lenient and strict) and as a prediction manifest.
void read_labels(const std::uint8_t* data, std::size_t size);

// load_model on the bytes as a model file.
void load_model_file(const std::uint8_t* data, std::size_t size);

// The bytes as a prepared cache: opened, then every image, id, age and sex read.
void open_prepared_cache(const std::uint8_t* data, std::size_t size);

// The bytes sent as one connection's requests to an HttpServer (the service's intake) on the
// loopback, with routes that take a multipart upload as POST /v1/predict does; returns once
// the server has answered and closed the connection. Throws boneage::Error when the server
// neither answers nor closes within 20 s.
void serve_http(const std::uint8_t* data, std::size_t size);
// The same, returning what the server sent back (its first MB).
std::string exchange_http(const std::uint8_t* data, std::size_t size);
// Stops the server serve_http started, if any (at the end of a test; a fuzzer never does).
void stop_http();

// The names above as the fuzz targets and the corpus folders know them ("image", "dicom",
// "labels", "model", "cache", "http"), and the entry point of each.
using EntryPoint = void (*)(const std::uint8_t*, std::size_t);
struct Target {
    std::string name;
    EntryPoint run;
};
const std::vector<Target>& targets();

// What a fuzz target does with its input: calls `run`; a boneage::Error is the expected
// refusal of bad bytes and ends the call, except one of kind Internal (which the library keeps
// for its own bugs and for third-party exceptions it did not expect): that is written to stderr
// and aborts, as a finding. Any other exception leaves, for libFuzzer to report.
void run_checked(EntryPoint run, const std::uint8_t* data, std::size_t size);

}  // namespace boneage::fuzz
