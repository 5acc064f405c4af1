// zlib, for reading gzipped data sets (MNIST and Fashion-MNIST ship as .gz files).
#include <zlib.h>
