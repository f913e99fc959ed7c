// labels: cpu
// The data layer: decoding (formats, conversions, corrupt and forged files), transforms
// (PIL-exact resize, flip, normalisation, crops), image-folder datasets (both layouts and
// every folder error) and the synthetic dataset. Images are written by the tests themselves.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"
#include "data/synthetic.h"
#include "data/transforms.h"

using namespace data;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system's temp folder, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("test_data_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A pattern with detail at every frequency, so resampling mistakes show.
std::vector<uint8_t> pattern(int width, int height, int channels) {
  std::vector<uint8_t> p(static_cast<size_t>(width) * height * channels);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < channels; ++c)
        p[(static_cast<size_t>(y) * width + x) * channels + c] =
            static_cast<uint8_t>((x * 37 + y * 11 + c * 71 + (x * y) % 13 * 9) % 256);
  return p;
}

// A smooth pattern that JPEG keeps closely.
std::vector<uint8_t> smooth_pattern(int width, int height) {
  std::vector<uint8_t> p(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        p[(static_cast<size_t>(y) * width + x) * 3 + c] =
            static_cast<uint8_t>(60 + 3 * x + 2 * y + 30 * c);
  return p;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)),
                              std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Runs `f`, expecting an exception of type E whose message contains every one of `parts`.
template <typename E, typename F>
void expect_error_of(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL() << "expected an exception";
  } catch (const E& e) {
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "'" << part << "' not in: " << e.what();
    }
  }
}
template <typename F>
void expect_decode_error(F&& f, const std::vector<std::string>& parts) {
  expect_error_of<DecodeError>(f, parts);
}
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  expect_error_of<engine::Error>(f, parts);
}

}  // namespace

// ---------------------------------------------------------------- decoding

TEST(Decode, PngAndBmpRoundTripExactly) {
  TempDir dir;
  const std::vector<uint8_t> rgb = pattern(37, 23, 3);
  for (const char* name : {"a.png", "a.bmp", "UPPER.PNG"}) {
    write_image(dir / name, 37, 23, 3, rgb.data());
    const Image image = decode_image_file(dir / name);
    EXPECT_EQ(image.width, 37);
    EXPECT_EQ(image.height, 23);
    EXPECT_EQ(image.pixels, rgb) << name;
  }
}

TEST(Decode, JpegIsClose) {
  TempDir dir;
  const std::vector<uint8_t> rgb = smooth_pattern(37, 23);
  write_image(dir / "a.jpg", 37, 23, 3, rgb.data(), 95);
  const Image image = decode_image_file(dir / "a.jpg");
  ASSERT_EQ(image.width, 37);
  ASSERT_EQ(image.height, 23);
  double total_error = 0;
  for (size_t i = 0; i < rgb.size(); ++i) total_error += std::abs(image.pixels[i] - rgb[i]);
  EXPECT_LT(total_error / rgb.size(), 2.0);
}

TEST(Decode, GrayAndAlphaBecomeRgb) {
  TempDir dir;
  const std::vector<uint8_t> gray = pattern(37, 23, 1), gray_alpha = pattern(37, 23, 2),
                             rgba = pattern(37, 23, 4);
  write_image(dir / "gray.png", 37, 23, 1, gray.data());
  write_image(dir / "gray_alpha.png", 37, 23, 2, gray_alpha.data());
  write_image(dir / "rgba.png", 37, 23, 4, rgba.data());
  write_image(dir / "rgba.bmp", 37, 23, 4, rgba.data());
  const Image from_gray = decode_image_file(dir / "gray.png");
  const Image from_gray_alpha = decode_image_file(dir / "gray_alpha.png");
  for (size_t i = 0; i < gray.size(); ++i) {
    for (int c = 0; c < 3; ++c) {
      ASSERT_EQ(from_gray.pixels[i * 3 + c], gray[i]);
      ASSERT_EQ(from_gray_alpha.pixels[i * 3 + c], gray_alpha[i * 2]);  // alpha dropped
    }
  }
  for (const char* name : {"rgba.png", "rgba.bmp"}) {
    const Image from_rgba = decode_image_file(dir / name);
    for (size_t i = 0; i < gray.size(); ++i) {
      for (int c = 0; c < 3; ++c) ASSERT_EQ(from_rgba.pixels[i * 3 + c], rgba[i * 4 + c]) << name;
    }
  }
  // A grayscale JPEG is 3 equal channels too.
  write_image(dir / "gray.jpg", 37, 23, 1, gray.data());
  const Image from_gray_jpeg = decode_image_file(dir / "gray.jpg");
  for (size_t i = 0; i < gray.size(); ++i) {
    ASSERT_EQ(from_gray_jpeg.pixels[i * 3], from_gray_jpeg.pixels[i * 3 + 1]);
    ASSERT_EQ(from_gray_jpeg.pixels[i * 3], from_gray_jpeg.pixels[i * 3 + 2]);
  }
}

TEST(Decode, FromMemory) {
  TempDir dir;
  const std::vector<uint8_t> rgb = pattern(5, 7, 3);
  write_image(dir / "a.png", 5, 7, 3, rgb.data());
  const std::vector<uint8_t> bytes = read_bytes(dir / "a.png");
  const Image image = decode_image_memory(bytes.data(), bytes.size(), "in-memory");
  EXPECT_EQ(image.pixels, rgb);
}

TEST(Decode, RandomBytesEmptyMissingAndFolderAreRefused) {
  TempDir dir;
  std::vector<uint8_t> noise(1000);
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  write_bytes(dir / "noise.jpg", noise);
  expect_decode_error([&] { decode_image_file(dir / "noise.jpg"); },
                      {dir / "noise.jpg", "not a JPEG, PNG or BMP image"});
  write_bytes(dir / "empty.png", {});
  expect_decode_error([&] { decode_image_file(dir / "empty.png"); },
                      {dir / "empty.png", "empty file"});
  expect_decode_error([&] { decode_image_file(dir / "missing.png"); },
                      {dir / "missing.png", "cannot open", "No such file"});
  fs::create_directory(dir / "folder.png");
  expect_decode_error([&] { decode_image_file(dir / "folder.png"); }, {"not a regular file"});
  // A valid signature followed by garbage is a corrupt header, not a crash.
  std::vector<uint8_t> fake_png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  fake_png.insert(fake_png.end(), noise.begin(), noise.begin() + 40);
  write_bytes(dir / "fake.png", fake_png);
  expect_decode_error([&] { decode_image_file(dir / "fake.png"); }, {dir / "fake.png", "PNG"});
}

TEST(Decode, TruncatedFilesAreRefused) {
  TempDir dir;
  const std::vector<uint8_t> rgb = pattern(37, 23, 3);
  for (const char* name : {"a.png", "a.jpg", "a.bmp"}) {
    write_image(dir / name, 37, 23, 3, rgb.data());
    std::vector<uint8_t> bytes = read_bytes(dir / name);
    // Cut at several points past the header: every one must fail, none may crash.
    for (double keep : {0.3, 0.6, 0.9}) {
      const std::vector<uint8_t> cut(bytes.begin(),
                                     bytes.begin() + static_cast<long>(bytes.size() * keep));
      write_bytes(dir / "cut", cut);
      expect_decode_error([&] { decode_image_file(dir / "cut"); }, {dir / "cut"});
    }
  }
}

TEST(Decode, JpegHuffmanTablesThatWouldOverflowStbAreRefused) {
  TempDir dir;
  write_image(dir / "a.jpg", 37, 23, 3, smooth_pattern(37, 23).data());
  const std::vector<uint8_t> bytes = read_bytes(dir / "a.jpg");
  size_t dht = 0;  // the first DHT marker (stb writes all four tables in one segment)
  while (dht + 1 < bytes.size() && !(bytes[dht] == 0xFF && bytes[dht + 1] == 0xC4)) ++dht;
  ASSERT_LT(dht + 1, bytes.size());

  std::vector<uint8_t> too_many_codes = bytes;  // the first table's 16 counts sum to 4080
  std::fill(too_many_codes.begin() + dht + 5, too_many_codes.begin() + dht + 21, 0xFF);
  write_bytes(dir / "counts.jpg", too_many_codes);
  expect_decode_error([&] { decode_image_file(dir / "counts.jpg"); },
                      {dir / "counts.jpg", "Huffman table of 4080 codes"});

  std::vector<uint8_t> undefined_tables = bytes;  // the DHT segment becomes an APP4 segment
  undefined_tables[dht + 1] = 0xE4;
  write_bytes(dir / "undefined.jpg", undefined_tables);
  expect_decode_error([&] { decode_image_file(dir / "undefined.jpg"); },
                      {dir / "undefined.jpg", "Huffman table the file does not define"});
}

TEST(Decode, ForgedHugeHeaderRefusedBeforeAllocation) {
  TempDir dir;
  const std::vector<uint8_t> rgb = pattern(4, 4, 3);
  write_image(dir / "a.png", 4, 4, 3, rgb.data());
  std::vector<uint8_t> bytes = read_bytes(dir / "a.png");
  // IHDR's width and height (big-endian) sit at bytes 16-23; stb does not check the CRC.
  const uint8_t huge[4] = {0x00, 0x01, 0x86, 0xA0};  // 100000
  std::copy(huge, huge + 4, bytes.begin() + 16);
  std::copy(huge, huge + 4, bytes.begin() + 20);
  write_bytes(dir / "forged.png", bytes);
  expect_decode_error([&] { decode_image_file(dir / "forged.png"); },
                      {dir / "forged.png", "header claims 100000x100000", "over the limit"});
  // A tighter limit refuses a real image the same way.
  write_image(dir / "b.png", 37, 23, 3, pattern(37, 23, 3).data());
  DecodeLimits limits;
  limits.max_pixels = 100;
  expect_decode_error([&] { decode_image_file(dir / "b.png", limits); }, {"header claims 37x23"});
  limits = DecodeLimits{};
  limits.max_side = 30;
  expect_decode_error([&] { decode_image_file(dir / "b.png", limits); }, {"header claims 37x23"});
}

// ---------------------------------------------------------------- transforms

namespace {
// A weighted sum that changes when any value or its position changes.
int64_t checksum(const std::vector<uint8_t>& v) {
  int64_t sum = 0;
  for (size_t i = 0; i < v.size(); ++i) sum += static_cast<int64_t>(i % 251 + 1) * v[i];
  return sum;
}

Image make_image(int width, int height, const std::vector<uint8_t>& rgb) {
  Image image(width, height);
  image.pixels = rgb;
  return image;
}
}  // namespace

TEST(Transforms, ResizeMatchesPil) {
  // Expected values from PIL 9.4: Image.fromarray(pattern).resize((w, h), Image.BILINEAR).
  const Image image = make_image(37, 23, pattern(37, 23, 3));
  struct Case {
    int width, height;
    int64_t checksum;
    std::vector<uint8_t> first;
  };
  const Case cases[] = {{16, 9, 6072236, {51, 122, 177, 142, 135, 127}},
                        {50, 40, 94953933, {0, 71, 142, 23, 94, 165}},
                        {37, 10, 16752340, {9, 80, 151, 54, 125, 196}}};
  for (const Case& c : cases) {
    const Image out = resize_bilinear(ImageView::of(image), c.width, c.height);
    ASSERT_EQ(out.width, c.width);
    ASSERT_EQ(out.height, c.height);
    EXPECT_EQ(std::vector<uint8_t>(out.pixels.begin(), out.pixels.begin() + 6), c.first);
    EXPECT_EQ(checksum(out.pixels), c.checksum) << c.width << "x" << c.height;
  }
}

TEST(Transforms, ResizeOfConstantStaysConstant) {
  Image image(37, 23);
  for (size_t i = 0; i < image.pixels.size(); ++i)
    image.pixels[i] = static_cast<uint8_t>(i % 3 == 0 ? 200 : i % 3 == 1 ? 7 : 255);
  for (auto [w, h] : {std::pair{224, 224}, {16, 9}, {5, 61}, {1, 1}}) {
    const Image out = resize_bilinear(ImageView::of(image), w, h);
    for (size_t i = 0; i < out.pixels.size(); i += 3) {
      ASSERT_EQ(out.pixels[i], 200);
      ASSERT_EQ(out.pixels[i + 1], 7);
      ASSERT_EQ(out.pixels[i + 2], 255);
    }
  }
}

TEST(Transforms, NormalisationValues) {
  Image image(3, 2);
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    image.pixels[i] = 0;
    image.pixels[i + 1] = 128;
    image.pixels[i + 2] = 255;
  }
  TransformConfig config = eval_transform(2);
  config.width = 3;
  std::vector<float> out(2 * 3 * 3);
  transform_image(image, config, 0, 0, out.data());
  for (size_t i = 0; i < out.size(); i += 3) {
    EXPECT_FLOAT_EQ(out[i], (0.0f - 0.485f) / 0.229f);
    EXPECT_FLOAT_EQ(out[i + 1], (128.0f / 255.0f - 0.456f) / 0.224f);
    EXPECT_FLOAT_EQ(out[i + 2], (1.0f - 0.406f) / 0.225f);
  }
}

TEST(Transforms, FlipIsAMirrorAndDependsOnlyOnKeyAndIndex) {
  const Image image = make_image(37, 23, pattern(37, 23, 3));
  const TransformConfig plain = eval_transform(20);
  TransformConfig flipping = plain;
  flipping.random_flip = true;
  std::vector<float> reference(20 * 20 * 3), out(reference.size()), again(reference.size());
  transform_image(image, plain, 0, 0, reference.data());
  int flipped = 0;
  const uint64_t key = derive_key(7, RandomPurpose::Augment, 0);
  for (uint64_t index = 0; index < 32; ++index) {
    transform_image(image, flipping, key, index, out.data());
    transform_image(image, flipping, key, index, again.data());
    ASSERT_EQ(out, again);
    bool mirrored = true, same = true;
    for (int y = 0; y < 20; ++y)
      for (int x = 0; x < 20; ++x)
        for (int c = 0; c < 3; ++c) {
          const float v = out[(y * 20 + x) * 3 + c];
          same &= v == reference[(y * 20 + x) * 3 + c];
          mirrored &= v == reference[(y * 20 + 19 - x) * 3 + c];
        }
    ASSERT_TRUE(same != mirrored) << "sample " << index << " is neither the image nor its mirror";
    flipped += mirrored;
  }
  EXPECT_GT(flipped, 6);  // about half of 32
  EXPECT_LT(flipped, 26);
}

TEST(Transforms, EvaluationIsDeterministic) {
  const Image image = make_image(37, 23, pattern(37, 23, 3));
  const TransformConfig config = eval_transform(16);
  EXPECT_FALSE(config.is_random());
  std::vector<float> first(16 * 16 * 3), other(first.size());
  transform_image(image, config, 1, 0, first.data());
  for (uint64_t index : {1, 2, 99}) {
    transform_image(image, config, derive_key(index, RandomPurpose::Augment, index), index,
                    other.data());
    EXPECT_EQ(first, other);
  }
}

TEST(Transforms, RandomResizedCropFollowsSeedAndTorchvisionRanges) {
  const RandomResizedCropParams params;
  const uint64_t key = derive_key(3, RandomPurpose::Augment, 0);
  int distinct = 0;
  CropBox previous{};
  for (uint64_t index = 0; index < 200; ++index) {
    DrawStream a(key, index), b(key, index);
    const CropBox box = random_resized_crop_box(300, 200, params, a);
    const CropBox same = random_resized_crop_box(300, 200, params, b);
    ASSERT_EQ(box.left, same.left);
    ASSERT_EQ(box.top, same.top);
    ASSERT_EQ(box.width, same.width);
    ASSERT_EQ(box.height, same.height);
    ASSERT_GE(box.left, 0);
    ASSERT_GE(box.top, 0);
    ASSERT_LE(box.left + box.width, 300);
    ASSERT_LE(box.top + box.height, 200);
    const double area = double(box.width) * box.height / (300.0 * 200.0);
    const double ratio = double(box.width) / box.height;
    EXPECT_GE(area, 0.07);  // 0.08 up to rounding of the sides
    EXPECT_LE(area, 1.0);
    EXPECT_GE(ratio, 0.74);
    EXPECT_LE(ratio, 1.35);
    distinct += box.left != previous.left || box.width != previous.width;
    previous = box;
  }
  EXPECT_GT(distinct, 150);
  // Through transform_image: same key and index, same pixels.
  const Image image = make_image(37, 23, pattern(37, 23, 3));
  TransformConfig config = eval_transform(12);
  config.geometry = Geometry::RandomResizedCrop;
  std::vector<float> first(12 * 12 * 3), again(first.size()), other(first.size());
  transform_image(image, config, key, 5, first.data());
  transform_image(image, config, key, 5, again.data());
  transform_image(image, config, key, 6, other.data());
  EXPECT_EQ(first, again);
  EXPECT_NE(first, other);
}

TEST(Transforms, CenterCropRoundsHalfToEvenAsPython) {
  const CropBox a = center_crop_box(5, 9, 2, 2);  // offsets 1.5 -> 2, 3.5 -> 4
  EXPECT_EQ(a.left, 2);
  EXPECT_EQ(a.top, 4);
  const CropBox b = center_crop_box(7, 3, 2, 2);  // 2.5 -> 2, 0.5 -> 0
  EXPECT_EQ(b.left, 2);
  EXPECT_EQ(b.top, 0);
  EXPECT_THROW(center_crop_box(7, 3, 8, 2), engine::Error);
}

TEST(Transforms, ResizeShorterThenCenterCrop) {
  const Image image = make_image(37, 23, pattern(37, 23, 3));
  TransformConfig config = eval_transform(16);
  config.geometry = Geometry::ResizeShorterCenterCrop;
  config.resize_shorter = 18;  // 37x23 -> 28x18 (28.95 truncated), then the centre 16x16
  std::vector<float> out(16 * 16 * 3), expected(out.size());
  transform_image(image, config, 0, 0, out.data());
  const Image resized = resize_bilinear(ImageView::of(image), 28, 18);
  const Image cropped = resize_bilinear(crop(ImageView::of(resized), {6, 1, 16, 16}), 16, 16);
  transform_image(cropped, eval_transform(16), 0, 0, expected.data());
  EXPECT_EQ(out, expected);
  config.resize_shorter = 15;
  EXPECT_THROW(config.validate(), engine::Error);
}

// ---------------------------------------------------------------- folder datasets

namespace {
void write_tiny(const std::string& path, int shade = 100) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<uint8_t> rgb(3 * 3 * 3, static_cast<uint8_t>(shade));
  write_image(path, 3, 3, 3, rgb.data());
}
}  // namespace

TEST(Dataset, OneSubsetLayoutClassesOrderAndIgnoredFiles) {
  TempDir dir;
  const fs::path root = dir.path() / "tiny";
  write_tiny((root / "train/nature/b.png").string());
  write_tiny((root / "train/nature/a.JPG").string());
  write_tiny((root / "train/nature/deeper/c.bmp").string());
  write_tiny((root / "train/AI/z.jpeg").string());
  write_tiny((root / "train/AI/.hidden.png").string());
  write_bytes((root / "train/AI/notes.txt").string(), {'x'});
  write_bytes((root / "train/README").string(), {'x'});
  write_tiny((root / "val/real/r.png").string());
  write_tiny((root / "val/fake/f.png").string());

  EXPECT_EQ(list_subsets(root.string()), std::vector<std::string>{"tiny"});
  const FolderDataset train(root.string(), "train");
  ASSERT_EQ(train.size(), 4u);
  EXPECT_EQ(train.sample(0).path, (root / "train/AI/z.jpeg").string());  // "AI" < "nature"
  EXPECT_EQ(train.sample(0).label, kLabelGenerated);
  EXPECT_EQ(train.sample(1).path, (root / "train/nature/a.JPG").string());
  EXPECT_EQ(train.sample(2).path, (root / "train/nature/b.png").string());
  EXPECT_EQ(train.sample(3).path, (root / "train/nature/deeper/c.bmp").string());
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(train.sample(i).label, kLabelReal);
  EXPECT_EQ(train.sample(0).subset, "tiny");
  EXPECT_EQ(train.ignored_files(), 3u);
  EXPECT_EQ(train.label_counts(), (std::vector<size_t>{3, 1}));
  EXPECT_NE(train.summary().find("tiny/train: 3 real + 1 ai"), std::string::npos)
      << train.summary();
  EXPECT_EQ(train.load(2).width, 3);

  const FolderDataset val((root / "").string(), "val");  // a trailing slash changes nothing
  ASSERT_EQ(val.size(), 2u);
  EXPECT_EQ(val.sample(0).label, kLabelGenerated);  // fake
  EXPECT_EQ(val.sample(1).label, kLabelReal);       // real
  EXPECT_EQ(val.subsets(), std::vector<std::string>{"tiny"});
}

TEST(Dataset, SubsetLayout) {
  TempDir dir;
  const fs::path root = dir.path() / "genimage";
  for (const char* subset : {"sdv5", "glide", "adm"}) {
    for (const char* split : {"train", "val"}) {
      for (const char* cls : {"nature", "ai"}) {
        write_tiny((root / subset / split / cls / "x.png").string());
      }
    }
  }
  fs::create_directories(root / ".cache");  // hidden folders are not subsets
  EXPECT_EQ(list_subsets(root.string()), (std::vector<std::string>{"adm", "glide", "sdv5"}));
  const FolderDataset all(root.string(), "val");
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all.sample(0).subset, "adm");
  EXPECT_EQ(all.sample(5).subset, "sdv5");
  EXPECT_EQ(all.subsets(), (std::vector<std::string>{"adm", "glide", "sdv5"}));
  const FolderDataset one(root.string(), "train", {"glide"});
  ASSERT_EQ(one.size(), 2u);
  EXPECT_EQ(one.sample(0).subset, "glide");
  EXPECT_EQ(one.sample(0).path, (root / "glide/train/ai/x.png").string());
  expect_error([&] { FolderDataset(root.string(), "train", {"midjourney"}); },
               {"no subset 'midjourney'", "adm glide sdv5"});
}

TEST(Dataset, FolderErrorsNameThePathAndTheLayout) {
  TempDir dir;
  const fs::path root = dir.path() / "d";
  expect_error([&] { FolderDataset(root.string(), "train"); },
               {root.string(), "does not exist", "ROOT/<subset>/{train,val}/{nature,ai}"});
  write_bytes(dir / "file", {'x'});
  expect_error([&] { list_subsets(dir / "file"); }, {"is not a folder"});

  fs::create_directories(root);
  expect_error([&] { FolderDataset(root.string(), "train"); }, {"no train/val folders"});

  write_tiny((root / "train/nature/a.png").string());
  expect_error([&] { FolderDataset(root.string(), "val"); },
               {"missing folder", (root / "val").string(), "expected"});
  expect_error([&] { FolderDataset(root.string(), "train"); },
               {(root / "train").string(), "has only real images", "both classes"});

  fs::create_directories(root / "train/ai");
  expect_error([&] { FolderDataset(root.string(), "train"); },
               {(root / "train/ai").string(), "has no images"});
  write_bytes((root / "train/ai/x.txt").string(), {'x'});
  expect_error([&] { FolderDataset(root.string(), "train"); }, {"has no images"});

  write_tiny((root / "train/ai/a.png").string());
  write_tiny((root / "train/dogs/a.png").string());
  expect_error([&] { FolderDataset(root.string(), "train"); },
               {"unknown class folder", (root / "train/dogs").string(), "nature or real"});
  fs::remove_all(root / "train/dogs");
  EXPECT_EQ(FolderDataset(root.string(), "train").size(), 2u);

  fs::create_directories(root / "val");
  expect_error([&] { FolderDataset(root.string(), "val"); }, {"has no class folders"});

  // Subset layout: a folder that is not a subset is named.
  const fs::path multi = dir.path() / "multi";
  write_tiny((multi / "sdv5/train/nature/a.png").string());
  write_tiny((multi / "sdv5/train/ai/a.png").string());
  fs::create_directories(multi / "notes");
  expect_error([&] { list_subsets(multi.string()); },
               {(multi / "notes").string(), "neither a split"});
  fs::remove_all(multi / "notes");
  expect_error([&] { FolderDataset(multi.string(), "val"); },
               {"missing folder", (multi / "sdv5/val").string()});
}

TEST(Dataset, ClassFolderNames) {
  EXPECT_EQ(label_of_class_folder("nature"), kLabelReal);
  EXPECT_EQ(label_of_class_folder("Real"), kLabelReal);
  EXPECT_EQ(label_of_class_folder("ai"), kLabelGenerated);
  EXPECT_EQ(label_of_class_folder("FAKE"), kLabelGenerated);
  EXPECT_EQ(label_of_class_folder("natural"), -1);
  EXPECT_STREQ(label_name(kLabelReal), "real");
  EXPECT_STREQ(label_name(kLabelGenerated), "ai");
}

// ---------------------------------------------------------------- synthetic dataset

namespace {
// Energy at the Nyquist frequencies (the checkerboard patterns (-1)^x, (-1)^y, (-1)^(x+y))
// relative to the image's mean: |DFT| at (N/2, 0), (0, N/2), (N/2, N/2) over the DC term.
double nyquist_energy(const Image& image) {
  double dc = 0, columns = 0, rows = 0, both = 0;
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      const uint8_t* p = image.pixel(x, y);
      const double v = p[0] + p[1] + p[2];
      dc += v;
      columns += (x & 1) ? -v : v;
      rows += (y & 1) ? -v : v;
      both += ((x + y) & 1) ? -v : v;
    }
  }
  return (std::fabs(columns) + std::fabs(rows) + std::fabs(both)) / dc;
}
}  // namespace

TEST(Synthetic, DeterministicBalancedAndSplitDependent) {
  const SyntheticConfig config{42, 10, 32};
  const SyntheticDataset a(config, "train"), b(config, "train"), val(config, "val");
  const SyntheticDataset other_seed({43, 10, 32}, "train");
  ASSERT_EQ(a.size(), 10u);
  EXPECT_EQ(a.label_counts(), (std::vector<size_t>{5, 5}));
  EXPECT_EQ(a.subsets(), std::vector<std::string>{"synthetic"});
  for (size_t i = 0; i < a.size(); ++i) {
    const Image image = a.load(i);
    ASSERT_EQ(image.width, 32);
    ASSERT_EQ(image.height, 32);
    EXPECT_EQ(image.pixels, b.load(i).pixels);
    EXPECT_NE(image.pixels, val.load(i).pixels);
    EXPECT_NE(image.pixels, other_seed.load(i).pixels);
    EXPECT_EQ(a.sample(i).label, i % 2 == 0 ? kLabelReal : kLabelGenerated);
  }
  EXPECT_THROW(SyntheticDataset({1, 10, 31}, "train"), engine::Error);
}

TEST(Synthetic, UpsamplerLeavesACheckerboard) {
  Image flat(6, 6);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 100);
  const Image up = upsample_transposed_conv2x(flat);
  ASSERT_EQ(up.width, 12);
  // Phase gains of the fixed kernel: rows 1.1 / 0.9, columns 1.1 / 0.9.
  EXPECT_EQ(up.pixel(4, 4)[0], 121);
  EXPECT_EQ(up.pixel(5, 4)[0], 99);
  EXPECT_EQ(up.pixel(4, 5)[0], 99);
  EXPECT_EQ(up.pixel(5, 5)[0], 81);
}

TEST(Synthetic, ClassesDifferInHighFrequencySpectrum) {
  const SyntheticDataset dataset({7, 64, 64}, "train");
  double real_max = 0, generated_min = 1e9, real_sum = 0, generated_sum = 0;
  for (size_t i = 0; i < dataset.size(); ++i) {
    const double e = nyquist_energy(dataset.load(i));
    if (dataset.sample(i).label == kLabelReal) {
      real_max = std::max(real_max, e);
      real_sum += e;
    } else {
      generated_min = std::min(generated_min, e);
      generated_sum += e;
    }
  }
  // Every generated image shows more Nyquist energy than any real one, by a wide margin on average.
  EXPECT_GT(generated_min, real_max);
  EXPECT_GT(generated_sum, 10 * real_sum);
}
