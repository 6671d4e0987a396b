#include "sink_window_plugin.h"

#include "sink_window_kernels.h"

#include <cuda_runtime_api.h>

#include <exception>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

using namespace nvinfer1;

namespace ltexport
{
namespace
{
constexpr int32_t kRanks[SinkWindowAttentionPlugin::kNB_INPUTS] = {4, 4, 4, 4, 4, 1};

int toKernelDtype(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return LT_DTYPE_FP32;
    case DataType::kHALF: return LT_DTYPE_FP16;
    case DataType::kBF16: return LT_DTYPE_BF16;
    default: return -1;
    }
}

void logError(std::string const& message) noexcept
{
    pluginLog(ILogger::Severity::kERROR, message);
}

// A kVERBOSE trace line "call: key=value ..." per build-time call, so a builder's log shows what TensorRT asked
// (ltexport's engine builder collects them as evidence that the interfaces ran over every profile).
template <typename Describe>
void traceCall(char const* call, Describe&& describe) noexcept
{
    try
    {
        pluginLog(ILogger::Severity::kVERBOSE, std::string(call) + ": " + describe());
    }
    catch (std::exception const&)
    {
        // a trace line is never worth failing a call
    }
}

char const* dtypeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT64: return "int64";
    default: return "other";
    }
}

std::string range(int64_t lo, int64_t hi)
{
    return std::to_string(lo) + ".." + std::to_string(hi);
}

// The profile's ranges as TensorRT configured them: batch and seq come from query, the ring from past_key.
std::string describeProfile(DynamicPluginTensorDesc const* in, DynamicPluginTensorDesc const* out)
{
    using P = SinkWindowAttentionPlugin;
    DynamicPluginTensorDesc const& q = in[P::kQUERY];
    bool linear = true;
    for (int32_t i = 0; i < P::kNB_INPUTS; ++i)
    {
        linear = linear && in[i].desc.format == TensorFormat::kLINEAR;
    }
    for (int32_t i = 0; i < P::kNB_OUTPUTS; ++i)
    {
        linear = linear && out[i].desc.format == TensorFormat::kLINEAR && out[i].desc.type == q.desc.type;
    }
    std::ostringstream s;
    s << "batch=" << range(q.min.d[0], q.max.d[0]) << " seq=" << range(q.min.d[2], q.max.d[2])
      << " q_heads=" << q.max.d[1] << " kv_heads=" << in[P::kKEY].max.d[1] << " head_dim=" << q.max.d[3]
      << " ring=" << in[P::kPAST_KEY].max.d[2] << " dtype=" << dtypeName(q.desc.type)
      << " past_len=" << dtypeName(in[P::kPAST_LEN].desc.type) << " format=" << (linear ? "linear" : "other");
    return s.str();
}

std::string describeConfig(SinkWindowConfig const& c)
{
    std::ostringstream s;
    s << "sink=" << c.sink << " window=" << c.window << " scale=" << c.scale << " prefill=" << prefillName(c.prefillMode);
    return s.str();
}

// Shape and dtype rules shared by build time (dims may be -1 = not known yet) and run time (all known).
// Returns an empty string when nothing is wrong.
std::string shapeProblem(Dims const* dims, DataType const* types, SinkWindowConfig const& config)
{
    using P = SinkWindowAttentionPlugin;
    char const* names[P::kNB_INPUTS] = {"query", "key", "value", "past_key", "past_value", "past_len"};
    std::ostringstream err;
    for (int32_t i = 0; i < P::kNB_INPUTS; ++i)
    {
        if (dims[i].nbDims != kRanks[i])
        {
            err << names[i] << " must have rank " << kRanks[i] << ", got " << dims[i].nbDims;
            return err.str();
        }
    }
    if (types != nullptr)
    {
        if (toKernelDtype(types[P::kQUERY]) < 0)
        {
            return "query must be float32, float16 or bfloat16";
        }
        for (int32_t i = P::kKEY; i <= P::kPAST_VALUE; ++i)
        {
            if (types[i] != types[P::kQUERY])
            {
                return std::string(names[i]) + " must have the dtype of query";
            }
        }
        if (types[P::kPAST_LEN] != DataType::kINT64)
        {
            return "past_len must be int64";
        }
    }
    // Dims that must agree: a -1 (unknown at build time) matches anything.
    auto same = [&](int32_t a, int32_t da, int32_t b, int32_t db, char const* what) {
        int64_t const x = dims[a].d[da];
        int64_t const y = dims[b].d[db];
        if (x >= 0 && y >= 0 && x != y)
        {
            err << what << ": " << names[a] << " has " << x << ", " << names[b] << " has " << y;
            return false;
        }
        return true;
    };
    for (int32_t i = P::kKEY; i <= P::kPAST_LEN; ++i)
    {
        if (!same(P::kQUERY, 0, i, 0, "batch differs"))
        {
            return err.str();
        }
    }
    for (int32_t i = P::kKEY; i <= P::kPAST_VALUE; ++i)
    {
        if (!same(P::kQUERY, 3, i, 3, "head_dim differs") || (i > P::kKEY && !same(P::kKEY, 1, i, 1, "kv heads differ")))
        {
            return err.str();
        }
    }
    if (!same(P::kQUERY, 2, P::kKEY, 2, "seq differs") || !same(P::kQUERY, 2, P::kVALUE, 2, "seq differs"))
    {
        return err.str();
    }
    int64_t const ring = static_cast<int64_t>(config.sink) + config.window;
    for (int32_t i = P::kPAST_KEY; i <= P::kPAST_VALUE; ++i)
    {
        int64_t const slots = dims[i].d[2];
        if (slots >= 0 && slots != ring)
        {
            err << names[i] << " has " << slots << " slots, expected sink + window = " << ring;
            return err.str();
        }
    }
    int64_t const hq = dims[P::kQUERY].d[1];
    int64_t const hkv = dims[P::kKEY].d[1];
    if (hq >= 0 && hkv > 0 && hq % hkv != 0)
    {
        err << "query heads (" << hq << ") must be a multiple of kv heads (" << hkv << ")";
        return err.str();
    }
    int64_t const d = dims[P::kQUERY].d[3];
    if (d > LT_MAX_HEAD_DIM || d == 0)
    {
        err << "head_dim " << d << " is outside the supported 1.." << LT_MAX_HEAD_DIM;
        return err.str();
    }
    return {};
}

template <typename Desc>
std::string checkDescs(Desc const* in, int32_t nbInputs, int32_t nbOutputs, SinkWindowConfig const& config)
{
    if (in == nullptr || nbInputs != SinkWindowAttentionPlugin::kNB_INPUTS
        || nbOutputs != SinkWindowAttentionPlugin::kNB_OUTPUTS)
    {
        return "expects 6 inputs and 3 outputs";
    }
    Dims dims[SinkWindowAttentionPlugin::kNB_INPUTS];
    DataType types[SinkWindowAttentionPlugin::kNB_INPUTS];
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        if constexpr (std::is_same_v<Desc, DynamicPluginTensorDesc>)
        {
            dims[i] = in[i].desc.dims;
            types[i] = in[i].desc.type;
        }
        else
        {
            dims[i] = in[i].dims;
            types[i] = in[i].type;
        }
    }
    return shapeProblem(dims, types, config);
}

// configurePlugin (build time) and onShapeChange (run time) validate alike; only the descriptor type differs.
template <typename Desc>
int32_t validateDescs(char const* caller, Desc const* in, int32_t nbInputs, Desc const* out, int32_t nbOutputs,
    SinkWindowConfig const& config) noexcept
{
    try
    {
        if (out == nullptr)
        {
            logError(std::string(caller) + ": missing output descriptors");
            return -1;
        }
        std::string const problem = checkDescs(in, nbInputs, nbOutputs, config);
        if (!problem.empty())
        {
            logError(problem);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return -1;
}
} // namespace

SinkWindowAttentionPlugin::SinkWindowAttentionPlugin(SinkWindowConfig const& config, std::string name)
    : mConfig(config)
    , mName(std::move(name))
    , mPrefill(prefillName(config.prefillMode))
{
    mMetadata = describeConfig(config);
    mSerialFields = serializeConfig(mConfig, mPrefill);
    mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialCollection.fields = mSerialFields.data();
}

IPluginCapability* SinkWindowAttentionPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    try
    {
        switch (type)
        {
        case PluginCapabilityType::kBUILD: return static_cast<PluginBuildInterface*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        }
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return nullptr;
}

IPluginV3* SinkWindowAttentionPlugin::clone() noexcept
{
    try
    {
        return new SinkWindowAttentionPlugin(mConfig, mName);
    }
    catch (std::exception const& e)
    {
        logError(std::string("clone failed: ") + e.what());
    }
    return nullptr;
}

char const* SinkWindowAttentionPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SinkWindowAttentionPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SinkWindowAttentionPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t SinkWindowAttentionPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t SinkWindowAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
        {
            logError("getOutputDataTypes: expects 6 inputs and 3 outputs");
            return -1;
        }
        if (toKernelDtype(inputTypes[kQUERY]) < 0)
        {
            logError("query must be float32, float16 or bfloat16 (export the model in one of these dtypes)");
            return -1;
        }
        for (int32_t i = kKEY; i <= kPAST_VALUE; ++i)
        {
            if (inputTypes[i] != inputTypes[kQUERY])
            {
                logError("key/value/past_key/past_value must have the dtype of query");
                return -1;
            }
        }
        if (inputTypes[kPAST_LEN] != DataType::kINT64)
        {
            logError("past_len must be int64");
            return -1;
        }
        for (int32_t i = 0; i < kNB_OUTPUTS; ++i)
        {
            outputTypes[i] = inputTypes[kQUERY];
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return -1;
}

int32_t SinkWindowAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS
            || nbShapeInputs != 0)
        {
            logError("getOutputShapes: expects 6 inputs, 3 outputs and no shape inputs");
            return -1;
        }
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            if (inputs[i].nbDims != kRanks[i])
            {
                logError("query/key/value/past_key/past_value must be 4-D and past_len 1-D");
                return -1;
            }
        }
        // Output like query, presents like the past caches (the ring has a fixed size).
        outputs[kOUTPUT] = inputs[kQUERY];
        outputs[kPRESENT_KEY] = inputs[kPAST_KEY];
        outputs[kPRESENT_VALUE] = inputs[kPAST_VALUE];
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return -1;
}

bool SinkWindowAttentionPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    try
    {
        if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
            || pos >= nbInputs + nbOutputs)
        {
            return false;
        }
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
        {
            return false;
        }
        if (pos == kPAST_LEN)
        {
            return desc.type == DataType::kINT64;
        }
        if (pos == kQUERY)
        {
            return toKernelDtype(desc.type) >= 0;
        }
        return desc.type == inOut[kQUERY].desc.type;
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return false;
}

int32_t SinkWindowAttentionPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    int32_t const status = validateDescs("configurePlugin", in, nbInputs, out, nbOutputs, mConfig);
    if (status == 0)
    {
        traceCall("configurePlugin", [&] { return "node=" + mName + " " + describeProfile(in, out); });
    }
    return status;
}

size_t SinkWindowAttentionPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    try
    {
        if (inputs == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
        {
            return 0;
        }
        Dims const& qMin = inputs[kQUERY].min;
        Dims const& qMax = inputs[kQUERY].max;
        if (qMin.d[2] > 1 || qMax.d[2] < 1)
        {
            return 0; // no decode (T == 1) call possible in this profile
        }
        // Sized for the largest batch of the profile: smaller batches need less (the kernel checks).
        size_t const bytes = lt_sink_window_workspace_size(toKernelDtype(inputs[kQUERY].desc.type),
            static_cast<int>(qMax.d[0]), static_cast<int>(qMax.d[1]), static_cast<int>(inputs[kKEY].max.d[1]),
            mConfig.sink, mConfig.window, static_cast<int>(qMax.d[3]));
        traceCall("getWorkspaceSize", [&] {
            return "node=" + mName + " seq=" + range(qMin.d[2], qMax.d[2]) + " batch_max=" + std::to_string(qMax.d[0])
                + " bytes=" + std::to_string(bytes);
        });
        return bytes;
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return 0;
}

char const* SinkWindowAttentionPlugin::getMetadataString() noexcept
{
    return mMetadata.c_str();
}

#if LTEXPORT_TRT_ALIASED_IO
int32_t SinkWindowAttentionPlugin::getAliasedInput(int32_t outputIndex) noexcept
{
    // The ring is updated in place: present_key/value live in the past_key/value buffers.
    int32_t const input = outputIndex == kPRESENT_KEY ? kPAST_KEY : outputIndex == kPRESENT_VALUE ? kPAST_VALUE : -1;
    traceCall("getAliasedInput", [&] {
        return "node=" + mName + " output=" + std::to_string(outputIndex) + " input=" + std::to_string(input);
    });
    return input;
}
#endif

int32_t SinkWindowAttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return validateDescs("onShapeChange", in, nbInputs, out, nbOutputs, mConfig);
}

int32_t SinkWindowAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            logError("enqueue: null descriptors or buffers");
            return -1;
        }
        Dims const& q = inputDesc[kQUERY].dims;
        if (inputDesc[kPAST_KEY].dims.d[2] != static_cast<int64_t>(mConfig.sink) + mConfig.window)
        {
            logError("enqueue: past_key length differs from sink + window");
            return -1;
        }
        LtSinkWindowParams p{};
        p.dtype = toKernelDtype(inputDesc[kQUERY].type);
        p.batch = static_cast<int>(q.d[0]);
        p.q_heads = static_cast<int>(q.d[1]);
        p.kv_heads = static_cast<int>(inputDesc[kKEY].dims.d[1]);
        p.seq_len = static_cast<int>(q.d[2]);
        p.head_dim = static_cast<int>(q.d[3]);
        p.sink = mConfig.sink;
        p.window = mConfig.window;
        p.prefill_mode = mConfig.prefillMode;
        p.scale = mConfig.scale;
        p.query = inputs[kQUERY];
        p.key = inputs[kKEY];
        p.value = inputs[kVALUE];
        p.past_key = inputs[kPAST_KEY];
        p.past_value = inputs[kPAST_VALUE];
        p.past_len = static_cast<int64_t const*>(inputs[kPAST_LEN]);
        p.output = outputs[kOUTPUT];
        p.present_key = outputs[kPRESENT_KEY];
        p.present_value = outputs[kPRESENT_VALUE];
        p.workspace = workspace;
        // TensorRT allocated getWorkspaceSize() for the profile's largest batch, which covers this call.
        p.workspace_size = p.seq_len == 1 ? lt_sink_window_workspace_size(p.dtype, p.batch, p.q_heads, p.kv_heads,
                                                p.sink, p.window, p.head_dim)
                                          : 0;
        if (char const* problem = lt_sink_window_check(&p))
        {
            logError(std::string("enqueue: ") + problem);
            return -1;
        }
        cudaError_t const status = lt_sink_window_attention(&p, stream);
        if (status != cudaSuccess)
        {
            logError(std::string("enqueue: kernel launch failed: ") + cudaGetErrorName(status));
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return -1;
}

IPluginV3* SinkWindowAttentionPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources
}

PluginFieldCollection const* SinkWindowAttentionPlugin::getFieldsToSerialize() noexcept
{
    traceCall("getFieldsToSerialize", [&] { return "node=" + mName + " " + describeConfig(mConfig); });
    return &mSerialCollection;
}

IPluginV3* SinkWindowAttentionCreator::createPlugin(
    AsciiChar const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
{
    try
    {
        // Build and runtime phases receive the same fields (node attributes / getFieldsToSerialize).
        SinkWindowConfig const config = parseFields(fc);
        traceCall("createPlugin", [&] {
            return std::string("node=") + (name ? name : "?") + " phase="
                + (phase == TensorRTPhase::kRUNTIME ? "runtime" : "build") + " " + describeConfig(config);
        });
        return new SinkWindowAttentionPlugin(config, name ? name : "");
    }
    catch (std::exception const& e)
    {
        logError(std::string("cannot create plugin for node '") + (name ? name : "?") + "': " + e.what());
    }
    return nullptr;
}

PluginFieldCollection const* SinkWindowAttentionCreator::getFieldNames() noexcept
{
    return advertisedFields();
}

AsciiChar const* SinkWindowAttentionCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

AsciiChar const* SinkWindowAttentionCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

AsciiChar const* SinkWindowAttentionCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}
} // namespace ltexport
