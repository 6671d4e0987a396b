/*
 * IPluginV3 glue for ltexport::SinkWindowAttention (version "1"): shape/type/format negotiation, field
 * validation and dtype dispatch to the kernels of sink_window_kernels.h. Every TensorRT entry point is noexcept
 * and catches exceptions; failures are logged and reported as a non-zero status / null plugin.
 *
 * I/O: inputs query, key, value, past_key, past_value (one float dtype), past_len (int64);
 *      outputs output, present_key, present_value. present_* alias past_* where TensorRT supports it.
 */
#ifndef LTEXPORT_SINK_WINDOW_PLUGIN_H
#define LTEXPORT_SINK_WINDOW_PLUGIN_H

#include "sink_window_fields.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <string>
#include <vector>

// In-place cache update through aliased I/O (IPluginV3OneBuildV2::getAliasedInput) exists from TensorRT 10.3;
// TensorRT calls it only when the builder enables PreviewFeature::kALIASED_PLUGIN_IO_10_03, else it copies.
#if NV_TENSORRT_MAJOR > 10 || (NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR >= 3)
#define LTEXPORT_TRT_ALIASED_IO 1
#else
#define LTEXPORT_TRT_ALIASED_IO 0
#endif

namespace ltexport
{
#if LTEXPORT_TRT_ALIASED_IO
using PluginBuildInterface = nvinfer1::IPluginV3OneBuildV2;
#else
using PluginBuildInterface = nvinfer1::IPluginV3OneBuild;
#endif

// Logs through the TensorRT logger when one is known (see sink_window_registration.cpp), else stderr.
void pluginLog(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

class SinkWindowAttentionPlugin final : public nvinfer1::IPluginV3,
                                        public nvinfer1::IPluginV3OneCore,
                                        public PluginBuildInterface,
                                        public nvinfer1::IPluginV3OneRuntime
{
public:
    enum Input : int32_t
    {
        kQUERY = 0,
        kKEY,
        kVALUE,
        kPAST_KEY,
        kPAST_VALUE,
        kPAST_LEN,
        kNB_INPUTS
    };
    enum Output : int32_t
    {
        kOUTPUT = 0,
        kPRESENT_KEY,
        kPRESENT_VALUE,
        kNB_OUTPUTS
    };

    // name: the layer's name (the ONNX node's, from the creator), shown in the build-time trace.
    explicit SinkWindowAttentionPlugin(SinkWindowConfig const& config, std::string name = {});
    ~SinkWindowAttentionPlugin() override = default;
    // The serialised fields point into this object: copies would dangle (clone() builds a fresh one).
    SinkWindowAttentionPlugin(SinkWindowAttentionPlugin const&) = delete;
    SinkWindowAttentionPlugin& operator=(SinkWindowAttentionPlugin const&) = delete;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild (V2)
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getMetadataString() noexcept override;
#if LTEXPORT_TRT_ALIASED_IO
    int32_t getAliasedInput(int32_t outputIndex) noexcept override;
#endif

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    SinkWindowConfig const& config() const noexcept
    {
        return mConfig;
    }

private:
    SinkWindowConfig mConfig;
    std::string mName;
    std::string mPrefill;
    std::string mMetadata;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialCollection{};
};

class SinkWindowAttentionCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    SinkWindowAttentionCreator() = default;
    ~SinkWindowAttentionCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(nvinfer1::AsciiChar const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::AsciiChar const* getPluginName() const noexcept override;
    nvinfer1::AsciiChar const* getPluginVersion() const noexcept override;
    nvinfer1::AsciiChar const* getPluginNamespace() const noexcept override;
};
} // namespace ltexport

#endif // LTEXPORT_SINK_WINDOW_PLUGIN_H
