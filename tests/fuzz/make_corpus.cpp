// Writes the seed corpora of tests/fuzz/seeds.h: OUT/<harness>/<seed name>, one folder per
// harness (safetensors, checkpoint, image, metadata_json).
// Usage: fuzz_make_corpus OUT [harness...]
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>

#include "fuzz/seeds.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_FOLDER [harness...]\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  try {
    std::vector<std::string> harnesses(argv + 2, argv + argc);
    if (harnesses.empty()) harnesses = fuzz::harness_names();
    for (const std::string& harness : harnesses) {
      const fs::path folder = fs::path(argv[1]) / harness;
      fs::create_directories(folder);
      const std::vector<fuzz::Seed> seeds = fuzz::seeds_for(harness);
      for (const fuzz::Seed& seed : seeds) {
        std::ofstream out(folder / seed.name, std::ios::binary);
        out.write(seed.bytes.data(), static_cast<std::streamsize>(seed.bytes.size()));
        if (!out) throw std::runtime_error("cannot write " + (folder / seed.name).string());
      }
      std::printf("%s: %zu seeds in %s\n", harness.c_str(), seeds.size(), folder.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_make_corpus: %s\n", e.what());
    return 1;
  }
  return 0;
}
