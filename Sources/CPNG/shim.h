// libpng, for decoding the PNG files of image folders (through its simplified png_image API,
// which reports errors by its return value rather than by longjmp).
#include <png.h>
