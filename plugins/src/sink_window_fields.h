/*
 * Plugin fields of ltexport::SinkWindowAttention <-> a validated config. Kept apart from the plugin class so the
 * checks are easy to read and test. Errors are std::invalid_argument with a one-line message; the caller (the
 * creator, at the ABI boundary) turns them into a log line and a null plugin.
 */
#ifndef LTEXPORT_SINK_WINDOW_FIELDS_H
#define LTEXPORT_SINK_WINDOW_FIELDS_H

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ltexport
{
constexpr char const* kPLUGIN_NAME = "SinkWindowAttention";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kPLUGIN_NAMESPACE = "ltexport";

struct SinkWindowConfig
{
    int32_t sink{0};
    int32_t window{1};
    float scale{1.f};
    int32_t prefillMode{0}; // LT_PREFILL_DENSE / LT_PREFILL_STREAMING
};

// Parses and validates a field collection (ONNX node attributes, or fields written by serializeConfig).
// Required: sink (int >= 0), window (int >= 1), scale (finite float > 0), prefill ("dense" | "streaming").
// Optional: plugin_namespace / plugin_version, which must then name this plugin. Anything else is an error.
SinkWindowConfig parseFields(nvinfer1::PluginFieldCollection const* fc);

// The fields the creator advertises (what the ONNX parser copies from node attributes).
nvinfer1::PluginFieldCollection const* advertisedFields();

// Serialisable fields pointing into `config` and `prefill` (which must outlive the returned fields).
std::vector<nvinfer1::PluginField> serializeConfig(SinkWindowConfig const& config, std::string const& prefill);

char const* prefillName(int32_t mode);
} // namespace ltexport

#endif // LTEXPORT_SINK_WINDOW_FIELDS_H
