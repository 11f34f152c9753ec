// Writes the seeds of every fuzz target (seeds.hpp) into DIR/<target>/<name>:
//   make_seeds build-fuzz/seeds
#include <boneage/error.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "entry_points.hpp"
#include "seeds.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: make_seeds DIR\n";
        return 2;
    }
    try {
        for (const boneage::fuzz::Target& target : boneage::fuzz::targets()) {
            const std::filesystem::path dir = std::filesystem::path(argv[1]) / target.name;
            std::filesystem::create_directories(dir);
            const auto seeds = boneage::fuzz::make_seeds(target.name);
            for (const boneage::fuzz::Seed& seed : seeds) {
                std::ofstream out(dir / seed.name, std::ios::binary | std::ios::trunc);
                out << seed.bytes;
                if (!out) throw boneage::Error(boneage::ErrorKind::CannotWrite, dir / seed.name,
                                               "cannot write the seed");
            }
            std::cout << target.name << ": " << seeds.size() << " seeds in " << dir.string()
                      << '\n';
        }
    } catch (const std::exception& e) {
        std::cerr << "make_seeds: " << e.what() << '\n';
        return 3;
    }
    return 0;
}
