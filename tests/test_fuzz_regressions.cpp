// labels: cpu
// Fuzzing's regression suite (tests/fuzz/README.md). Every generated seed and every saved
// reproducer (tests/fuzz/regressions/<harness>/) goes through the same entry points as the
// libFuzzer harnesses (tests/fuzz/targets.h): each must be accepted or refused with an
// engine::Error, never crash; the sanitizer CI build checks the memory side. Then the limits
// that keep hostile headers from driving large allocations, each refused, before anything is
// allocated for it, with a message naming the problem.
// Run: ctest --test-dir build -R 'Fuzz|Limits' --output-on-failure
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "fuzz/seeds.h"
#include "fuzz/targets.h"
#include "test_util.h"

namespace fs = std::filesystem;
using fuzz::Outcome;
using testing_util::expect_error;

namespace {

const fs::path kRegressions = fs::path(__FILE__).parent_path() / "fuzz" / "regressions";

// Every reproducer, by harness folder and file name, with a part of the error its input must
// now give ("" when it must be accepted). A new reproducer gets a line here: the test fails
// for files it does not list.
const std::map<std::string, std::string> kExpectedErrors = {
    {"image/oom-png-idat-chunk-claims-1.8gb.png", "truncated PNG (chunk 'IDAT' at byte 120 claims 1885339648 bytes"},
    {"image/ubsan-png-empty-first-idat.png", "PNG with an empty IDAT chunk before its image data (at byte 76)"},
    // Corrupt entropy data on which stb 2.27 shifts by 33 before it gives up (exempted from
    // that one check in data/stb_image_impl.cpp); must stay memory-safe (ASan).
    {"image/ubsan-jpeg-bit-reader-shift-33.jpg", "corrupt or truncated JPEG (unknown marker)"},
    // Found by reading the code the harness reaches (30 fuzzing minutes did not): a step count
    // beyond int64 was cast to int64 (UB) by Optimizer::load_state.
    {"metadata_json/review-optimizer-step-1e19.json", "SGD: load_state: 'weight.step' is 1e+19, not a step count"},
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Outcome run(const std::string& harness, const std::string& bytes) {
  return fuzz::run(harness, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// The outcome of a target for `bytes` and the errors it reported, nested ones included.
Outcome run_logged(const std::string& harness, const std::string& bytes, std::vector<std::string>& errors) {
  fuzz::error_log() = &errors;
  const Outcome outcome = run(harness, bytes);
  fuzz::error_log() = nullptr;
  return outcome;
}

bool any_contains(const std::vector<std::string>& messages, const std::string& needle) {
  return std::any_of(messages.begin(), messages.end(),
                     [&](const std::string& m) { return m.find(needle) != std::string::npos; });
}

std::string le32(uint32_t v) { return {char(v), char(v >> 8), char(v >> 16), char(v >> 24)}; }
std::string be32(uint32_t v) { return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; }
std::string le16(uint16_t v) { return {char(v), char(v >> 8)}; }
std::string be16(uint16_t v) { return {char(v >> 8), char(v)}; }

// A PNG of colour type `type` and `depth` whose IHDR claims width x height.
std::string png_claiming(uint32_t width, uint32_t height, int type = 2, int depth = 8) {
  std::string bytes = fuzz::seed_detail::png(5, 3, type, depth, false);
  return bytes.replace(16, 8, be32(width) + be32(height));
}

// A baseline JPEG whose frame header claims width x height.
std::string jpeg_claiming(uint16_t width, uint16_t height) {
  std::string bytes = fuzz::seed_detail::restart_jpeg();
  const size_t sof = bytes.find("\xff\xc0");
  return bytes.replace(sof + 5, 4, be16(height) + be16(width));
}

void expect_image_error(const std::string& bytes, const std::string& needle) {
  expect_error([&] { data::decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x"); },
               needle);
}

std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out;
  fuzz::seed_detail::put_le(out, header.size(), 8);
  return out + header + data;
}

void expect_safetensors_error(const std::string& bytes, const std::string& needle) {
  const std::string& path = fuzz::scratch_path(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  expect_error([&] { engine::SafeTensorsReader::open(path); }, needle);
}

}  // namespace

TEST(FuzzSeeds, EveryGeneratedSeedGivesItsExpectedOutcome) {
  for (const std::string& harness : fuzz::harness_names()) {
    const std::vector<fuzz::Seed> seeds = fuzz::seeds_for(harness);
    EXPECT_GE(seeds.size(), 3u) << harness;
    for (const fuzz::Seed& seed : seeds) {
      std::vector<std::string> errors;
      const Outcome outcome = run_logged(harness, seed.bytes, errors);
      EXPECT_EQ(outcome, seed.valid ? Outcome::Accepted : Outcome::Refused)
          << harness << "/" << seed.name << (errors.empty() ? "" : ": " + errors.back());
    }
  }
}

TEST(FuzzRegressions, EveryReproducerIsRefusedWithItsError) {
  size_t replayed = 0;
  for (const std::string& harness : fuzz::harness_names()) {
    if (!fs::is_directory(kRegressions / harness)) continue;
    for (const auto& entry : fs::directory_iterator(kRegressions / harness)) {
      const std::string key = harness + "/" + entry.path().filename().string();
      SCOPED_TRACE(key);
      std::vector<std::string> errors;
      const Outcome outcome = run_logged(harness, read_file(entry.path()), errors);
      ++replayed;
      auto expected = kExpectedErrors.find(key);
      if (expected == kExpectedErrors.end()) {
        ADD_FAILURE() << "no expected error listed for " << key << " in kExpectedErrors";
        continue;
      }
      if (expected->second.empty()) {
        EXPECT_EQ(outcome, Outcome::Accepted) << (errors.empty() ? "" : errors.back());
        continue;
      }
      EXPECT_TRUE(any_contains(errors, expected->second))
          << "expected an error containing '" << expected->second << "'; got "
          << (errors.empty() ? "none" : errors.back());
    }
  }
  EXPECT_EQ(replayed, kExpectedErrors.size()) << "a listed reproducer is missing from " << kRegressions;
}

// ---- limits (issue 7 part 5) ----

TEST(Limits, ImagesOfAbsurdDimensionsAreRefusedFromTheHeader) {
  const std::string over = "pixels, over the limit (side 32768, 268435456 pixels)";
  expect_image_error(png_claiming(100000, 100000), "header claims 100000x100000 " + over);
  std::string bmp = fuzz::seed_detail::bmp(7, 3, 24, 40, false);
  expect_image_error(bmp.replace(18, 8, le32(100000) + le32(100000)), "header claims 100000x100000 " + over);
  std::string os2 = fuzz::seed_detail::bmp(5, 3, 24, 12, false);
  expect_image_error(os2.replace(18, 4, le16(65535) + le16(65535)), "header claims 65535x65535 " + over);
  expect_image_error(jpeg_claiming(65535, 65535), "header claims 65535x65535 " + over);
  expect_image_error(png_claiming(40000, 1), "header claims 40000x1 " + over);  // one side too long
}

TEST(Limits, ImageSizesTheFileCannotHoldAreRefused) {
  // Within the pixel limits, but stb would reserve gigabytes for a file of a few hundred bytes.
  expect_image_error(png_claiming(16384, 16384, 6, 16),
                     "PNG header claims 16384x16384 pixels (2147500032 bytes of image data), more than its ");
  expect_image_error(jpeg_claiming(16384, 16384), "JPEG header claims 16384x16384 pixels, more than a file of ");
  // A chunk claiming more bytes than the file has: stb would reserve them before reading.
  std::string png = fuzz::seed_detail::png(5, 3, 2, 8, false);
  const size_t idat = png.find("IDAT") - 4;
  expect_image_error(png.replace(idat, 4, be32(0x7fff0000)), "truncated PNG (chunk 'IDAT' at byte ");
  // The same images at their true size decode.
  for (const std::string& ok : {fuzz::seed_detail::png(5, 3, 6, 16, false), fuzz::seed_detail::restart_jpeg()})
    EXPECT_EQ(fuzz::image(reinterpret_cast<const uint8_t*>(ok.data()), ok.size()), Outcome::Accepted);
}

TEST(Limits, WeightFilesClaimingTensorsLargerThanTheFileAreRefused) {
  expect_safetensors_error(
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,40000000000]}})",
                        std::string(16, '\0')),
      "tensor 'w': data_offsets [0, 40000000000] exceed the data section (16 bytes)");
  // Offsets inside the file, a shape that needs far more.
  expect_safetensors_error(
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,16]}})",
                        std::string(16, '\0')),
      "tensor 'w': data_offsets [0, 16] span 16 bytes but F32 [100000, 100000] needs 40000000000");
}

TEST(Limits, DeeplyNestedOrHugeJsonHeadersAreRefusedBeforeParsing) {
  expect_safetensors_error(safetensors_bytes("{\"a\":" + std::string(100000, '['), ""),
                           "header JSON nests deeper than 16 levels (at byte 20 of the header)");
  // A header length of 300 MiB in a small file, then in a (sparse) file that long.
  std::string claim;
  fuzz::seed_detail::put_le(claim, uint64_t{300} << 20, 8);
  expect_safetensors_error(claim + "{}", "header length 314572800 exceeds the 2 bytes after the length field");
  const fs::path big = fs::temp_directory_path() / ("fuzz-limits-" + std::to_string(::getpid()) + ".safetensors");
  std::ofstream(big, std::ios::binary) << claim;
  fs::resize_file(big, (uint64_t{300} << 20) + 8);
  expect_error([&] { engine::SafeTensorsReader::open(big.string()); },
               "header length 314572800 exceeds the limit of 104857600 bytes (100 MiB)");
  fs::remove(big);
}

TEST(Limits, DeeplyNestedJsonInCheckpointMetadataIsRefusedBeforeParsing) {
  std::map<std::string, std::string> metadata = fuzz::seed_detail::checkpoint_metadata("resnet50");
  models::parse_checkpoint_metadata(metadata, "ckpt");  // the seed's metadata is valid
  EXPECT_EQ(models::trained_image_size(metadata, "ckpt"), 64);
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  metadata["optimizer_scalars"] = deep;
  expect_error([&] { models::parse_checkpoint_metadata(metadata, "ckpt"); },
               "ckpt: checkpoint metadata 'optimizer_scalars' nests deeper than 16 levels");
  metadata["config"] = deep;
  expect_error([&] { models::trained_image_size(metadata, "ckpt"); },
               "ckpt: metadata 'config' nests deeper than 16 levels");
  // Sixteen levels are allowed.
  metadata["config"] = std::string(16, '[') + std::string(16, ']');
  EXPECT_EQ(models::trained_image_size(metadata, "ckpt"), 224);
}
