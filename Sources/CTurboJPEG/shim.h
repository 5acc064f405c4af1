// libjpeg-turbo's TurboJPEG API, for decoding the JPEG files of image folders.
#include <stddef.h>
#include <turbojpeg.h>
