// The one instantiation of stb_image (Debian's libstb, v2.27), used by data/image.cpp. Only the
// JPEG, PNG and BMP decoders are compiled in: the formats datasets use, and less decoder code
// exposed to untrusted files.
//
// A translation unit of its own so that the sanitizer builds can exempt stb's code, and only
// it, from the shift checks (CMakeLists.txt): on corrupt JPEG entropy data (a marker reached
// mid-block) v2.27's bit reader lets its bit count go negative and then shifts by 32 or more
// (stbi__grow_buffer_unsafe; found by tests/fuzz, reproducer
// tests/fuzz/regressions/image/ubsan-jpeg-bit-reader-shift-33.jpg). On the compilers and CPUs
// we build for, the shift count is masked: the decode goes on with garbage bits and ends in an
// error or in noise of the size the header gave; no memory is touched out of bounds (the ASan
// fuzz runs check that). stb 2.28 fixed it ("Combined length longer than code bits
// available"). The project's own parsing in data/image.cpp keeps every check.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO  // data/image.cpp reads files, so errors can name the path and errno
#include <stb_image.h>
#pragma GCC diagnostic pop
