package gateway_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"

	"github.com/ralf-gateway/ralf/core/mock"
)

// TestOpenAISDK drives /v1 with the official openai-go client, streaming and not,
// against a loopback upstream of each dialect.
func TestOpenAISDK(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: oai, dialect: openai, base_url: "{{MOCK}}/v1", model: mock-oai}
  - {name: gem, dialect: gemini, base_url: "{{MOCK}}/v1beta", model: mock-gem}
store: memory://
`)
	client := openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	want := strings.Join(mock.Answer("Hello", 20), "")

	for _, model := range []string{"oai", "gem"} {
		t.Run(model+"/non-stream", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model:    model,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Hello")},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Choices) != 1 || c.Choices[0].Message.Content != want {
				t.Fatalf("answer %+v, want %q", c.Choices, want)
			}
			if c.Choices[0].FinishReason != "stop" || c.Object != "chat.completion" {
				t.Fatalf("finish %q object %q", c.Choices[0].FinishReason, c.Object)
			}
			if c.Usage.TotalTokens == 0 {
				t.Fatal("usage not reported")
			}
		})
		t.Run(model+"/stream", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
				Model:         model,
				Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
				StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
			})
			var acc openai.ChatCompletionAccumulator
			chunks := 0
			for stream.Next() {
				chunk := stream.Current()
				acc.AddChunk(chunk)
				chunks++
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if chunks < 20 {
				t.Fatalf("%d chunks: the answer was not streamed", chunks)
			}
			if got := acc.Choices[0].Message.Content; got != want {
				t.Fatalf("streamed %q, want %q", got, want)
			}
			if acc.Usage.TotalTokens == 0 {
				t.Fatal("include_usage: no usage chunk")
			}
		})
	}

	t.Run("auto and provider/model", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, model := range []string{"auto", "oai/mock-other"} {
			c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
			})
			if err != nil {
				t.Fatalf("%s: %v", model, err)
			}
			if c.Choices[0].Message.Content != want {
				t.Fatalf("%s: %q", model, c.Choices[0].Message.Content)
			}
			if model == "oai/mock-other" && c.Model != "mock-other" {
				t.Fatalf("model override: answer reports %q", c.Model)
			}
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if strings.Join(ids, ",") != "auto,oai,gem" {
			t.Fatalf("models %v", ids)
		}
		// models.retrieve, as tools do to check a model before using it.
		// Resolved as a request's model is: a provider's configured model names it too.
		for _, id := range []string{"auto", "gem", "oai/other-model", "mock-gem"} {
			m, err := client.Models.Get(context.Background(), id)
			if err != nil || m.ID != id || m.Object != "model" {
				t.Fatalf("retrieve %s: %+v %v", id, m, err)
			}
		}
		_, err = client.Models.Get(context.Background(), "nope")
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
			t.Fatalf("retrieve nope: %v, want a 404 openai.Error", err)
		}
	})

	t.Run("errors are OpenAI-shaped", func(t *testing.T) {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "nope", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || !strings.Contains(apiErr.Message, "not found") {
			t.Fatalf("err %v, want a 404 openai.Error", err)
		}
		_, err = client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "auto", Messages: []openai.ChatCompletionMessageParamUnion{},
		})
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
			t.Fatalf("err %v, want a 400 openai.Error", err)
		}
	})
}
