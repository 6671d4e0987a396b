#include "sink_window_fields.h"

#include "sink_window_kernels.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;

namespace ltexport
{
namespace
{
[[noreturn]] void fail(std::string const& message)
{
    throw std::invalid_argument(message);
}

void requireScalar(PluginField const& f)
{
    if (f.data == nullptr || f.length != 1)
    {
        fail(std::string("field '") + f.name + "' must hold exactly one value");
    }
}

// The ONNX parser passes INT attributes as kINT32; accept the other integer widths other producers may use.
int64_t readInt(PluginField const& f)
{
    requireScalar(f);
    switch (f.type)
    {
    case PluginFieldType::kINT8: return *static_cast<int8_t const*>(f.data);
    case PluginFieldType::kINT16: return *static_cast<int16_t const*>(f.data);
    case PluginFieldType::kINT32: return *static_cast<int32_t const*>(f.data);
    case PluginFieldType::kINT64: return *static_cast<int64_t const*>(f.data);
    default: fail(std::string("field '") + f.name + "' must be an integer");
    }
}

double readFloat(PluginField const& f)
{
    requireScalar(f);
    switch (f.type)
    {
    case PluginFieldType::kFLOAT32: return *static_cast<float const*>(f.data);
    case PluginFieldType::kFLOAT64: return *static_cast<double const*>(f.data);
    default: fail(std::string("field '") + f.name + "' must be a float32 or float64");
    }
}

// kCHAR fields from the ONNX parser include the terminating NUL in `length`; ours do too. Accept either.
std::string readString(PluginField const& f)
{
    if (f.type != PluginFieldType::kCHAR || f.length < 0 || (f.length > 0 && f.data == nullptr))
    {
        fail(std::string("field '") + f.name + "' must be a string (kCHAR)");
    }
    char const* s = static_cast<char const*>(f.data);
    return f.length == 0 ? std::string() : std::string(s, strnlen(s, static_cast<size_t>(f.length)));
}

int32_t checkedInt(PluginField const& f, int64_t lo, char const* what)
{
    int64_t const v = readInt(f);
    if (v < lo || v > INT_MAX / LT_MAX_HEAD_DIM)
    {
        fail(std::string("field '") + f.name + "' = " + std::to_string(v) + " is out of range: " + what);
    }
    return static_cast<int32_t>(v);
}
} // namespace

char const* prefillName(int32_t mode)
{
    return mode == LT_PREFILL_STREAMING ? "streaming" : "dense";
}

SinkWindowConfig parseFields(PluginFieldCollection const* fc)
{
    if (fc == nullptr || fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        fail("missing plugin field collection");
    }
    SinkWindowConfig config;
    std::set<std::string> seen;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr)
        {
            fail("plugin field without a name");
        }
        std::string const name = f.name;
        if (!seen.insert(name).second)
        {
            fail("field '" + name + "' given twice");
        }
        if (name == "sink")
        {
            config.sink = checkedInt(f, 0, "sink must be >= 0");
        }
        else if (name == "window")
        {
            config.window = checkedInt(f, 1, "window must be >= 1");
        }
        else if (name == "scale")
        {
            double const scale = readFloat(f);
            if (!std::isfinite(scale) || scale <= 0.0 || scale > 3.0e38)
            {
                fail("field 'scale' must be a finite float > 0, got " + std::to_string(scale));
            }
            config.scale = static_cast<float>(scale);
        }
        else if (name == "prefill")
        {
            std::string const mode = readString(f);
            if (mode == "dense")
            {
                config.prefillMode = LT_PREFILL_DENSE;
            }
            else if (mode == "streaming")
            {
                config.prefillMode = LT_PREFILL_STREAMING;
            }
            else
            {
                fail("field 'prefill' must be \"dense\" or \"streaming\", got \"" + mode + "\"");
            }
        }
        else if (name == "plugin_namespace" || name == "plugin_version")
        {
            std::string const value = readString(f);
            std::string const expected = name == "plugin_namespace" ? kPLUGIN_NAMESPACE : kPLUGIN_VERSION;
            if (value != expected)
            {
                fail("field '" + name + "' is \"" + value + "\" but this plugin is " + kPLUGIN_NAMESPACE
                    + "::" + kPLUGIN_NAME + " version " + kPLUGIN_VERSION);
            }
        }
        else
        {
            fail("unknown field '" + name + "'");
        }
    }
    for (char const* required : {"sink", "window", "scale", "prefill"})
    {
        if (!seen.count(required))
        {
            fail(std::string("missing field '") + required + "'");
        }
    }
    if (static_cast<int64_t>(config.sink) + config.window > INT_MAX / LT_MAX_HEAD_DIM)
    {
        fail("sink + window is too large");
    }
    return config;
}

PluginFieldCollection const* advertisedFields()
{
    static PluginField const fields[] = {
        PluginField("sink", nullptr, PluginFieldType::kINT32, 1),
        PluginField("window", nullptr, PluginFieldType::kINT32, 1),
        PluginField("scale", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("prefill", nullptr, PluginFieldType::kCHAR, 0),
    };
    static PluginFieldCollection const collection{static_cast<int32_t>(sizeof(fields) / sizeof(fields[0])), fields};
    return &collection;
}

std::vector<PluginField> serializeConfig(SinkWindowConfig const& config, std::string const& prefill)
{
    return {
        PluginField("sink", &config.sink, PluginFieldType::kINT32, 1),
        PluginField("window", &config.window, PluginFieldType::kINT32, 1),
        PluginField("scale", &config.scale, PluginFieldType::kFLOAT32, 1),
        PluginField("prefill", prefill.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(prefill.size() + 1)),
    };
}
} // namespace ltexport
