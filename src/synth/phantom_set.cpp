// Writing a set of phantoms to disk, as an RSNA-style folder: images and labels.csv.
#include <boneage/error.hpp>
#include <boneage/image.hpp>
#include <boneage/parallel.hpp>
#include <boneage/synth.hpp>

#include <cmath>
#include <fstream>
#include <mutex>

namespace boneage {

namespace {
void write_labels(const std::filesystem::path& file, const std::vector<PhantomLabel>& labels) {
    std::ofstream out(file);
    if (!out) throw Error(ErrorKind::NotFound, file, "cannot open for writing");
    out << "id,boneage,male\n";
    for (const PhantomLabel& l : labels) {
        // Whole months, as in the RSNA training labels, unless a caller asked for fractions.
        double rounded = std::round(l.age_months);
        if (rounded == l.age_months)
            out << l.id << ',' << static_cast<long long>(rounded);
        else
            out << l.id << ',' << l.age_months;
        out << ',' << (l.male ? "True" : "False") << '\n';
    }
    if (!out.flush()) throw Error(ErrorKind::Internal, file, "write failed");
}
}  // namespace

std::vector<Phantom> write_phantom_set(const std::filesystem::path& dir, int count,
                                       std::uint64_t seed, const SynthOptions& options,
                                       PhantomFormat format,
                                       const std::function<void(int, int)>& progress) {
    std::vector<PhantomLabel> labels = phantom_labels(count, seed);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec || !std::filesystem::is_directory(dir))
        throw Error(ErrorKind::NotFound, dir, "cannot create output folder: " + ec.message());

    SynthOptions drawn = options;
    if (format == PhantomFormat::Dicom) drawn.bits16 = true;  // DICOM carries 16-bit pixels
    std::vector<Phantom> out(labels.size());
    std::mutex done_mutex;
    int done = 0;
    parallel_for(labels.size(), 0, [&](std::size_t i) {
        std::uint64_t s = phantom_seed(seed, int(i));
        Phantom p = make_phantom(labels[i], s, drawn);
        if (format == PhantomFormat::Dicom) {
            // Every third as MONOCHROME1 (stored inverted), as some scanners write.
            bool monochrome1 = i % 3 == 2;
            double spacing_mm = 300.0 / p.image.rows;  // a 30 cm film
            write_dicom(dir / (labels[i].id + ".dcm"), p.image, monochrome1, spacing_mm);
        } else {
            write_image(dir / (labels[i].id + ".png"), p.image);
        }
        p.image.release();
        out[i] = std::move(p);
        if (progress) {
            std::lock_guard<std::mutex> lock(done_mutex);
            progress(++done, int(labels.size()));
        }
    });
    write_labels(dir / "labels.csv", labels);
    return out;
}

}  // namespace boneage
